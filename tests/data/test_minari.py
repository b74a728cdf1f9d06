"""Minari datasets as expert data: the round trip with the CS285 pickle, BC from a dataset, and
the one-line errors (missing package, mismatched spaces, too few trajectories, taken ids)."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from tiny_runs import hopper_expert

from bcjax.acting.envs import env_info, make_env
from bcjax.data.bundled import bundled_expert_path
from bcjax.data.expert_data import collect_expert_episodes, load_expert_data
from bcjax.errors import BcjaxError
from bcjax.run.logger import read_metrics
from bcjax.run.main import main as train_main

minari = pytest.importorskip("minari")

DATASET = "bcjax/hopper/expert-v0"


@pytest.fixture
def minari_root(tmp_path, monkeypatch) -> Path:
    """Minari's local dataset folder, in the test's tmp dir."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def _collect_script():
    from bcjax.experts import collection as expert_collection

    return expert_collection


@pytest.fixture
def hopper_dataset(minari_root, tmp_path) -> Path:
    """2 bundled-expert Hopper trajectories (40 steps), written by one run as a Minari dataset and a CS285 pickle."""
    pkl = tmp_path / "expert_data.pkl"
    argv = ["-env", "Hopper-v4", "--n_traj", "2", "--ep_len", "40", "--minari", DATASET, "--output", str(pkl)]
    assert _collect_script().main(argv) == 0
    return pkl


def _one_line_error(capsys, rc: int) -> str:
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_minari_round_trip_equals_the_cs285_pickle(hopper_dataset, minari_root):
    pkl_paths = load_expert_data(hopper_dataset)
    for source in (f"minari:{DATASET}", str(minari_root / DATASET)):  # by id, and by directory
        paths = load_expert_data(source)
        assert len(paths) == len(pkl_paths) == 2
        for got, want in zip(paths, pkl_paths):
            assert set(got) == set(want)
            for key in want:
                assert got[key].dtype == want[key].dtype, key
                np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # What Minari itself reads: T+1 observations ending in the last next_observation; each
    # episode was cut at --ep_len, a truncation; metadata names the env, the expert and its return.
    ds = minari.load_dataset(DATASET)
    for ep, want in zip(ds.iterate_episodes(), pkl_paths):
        np.testing.assert_array_equal(ep.observations[:-1], want["observation"])
        np.testing.assert_array_equal(ep.observations[-1], want["next_observation"][-1])
        assert not ep.terminations.any() and ep.truncations.tolist() == [False] * 39 + [True]
    assert ds.env_spec.id == "Hopper-v4" and ds.recover_environment().spec.id == "Hopper-v4"
    meta = ds.storage.metadata
    assert Path(meta["expert_policy_file"]).name == "Hopper-v4.pkl" and len(meta["expert_policy_sha256"]) == 64
    assert meta["expert_return_mean"] == pytest.approx(np.mean([p["reward"].sum() for p in pkl_paths]))
    assert meta["total_episodes"] == 2 and meta["total_steps"] == 80


def test_terminations_and_truncations(minari_root):
    """Zero torques: the hopper falls (the env terminates, well before its 1000-step limit); at
    ep_len 30 the rollout is cut (a truncation). Both end with terminal = 1, as the homework sets it."""
    from bcjax.data.minari import save_minari

    for ep_len, name in ((1000, "falls-v0"), (30, "cut-v0")):
        paths, terminated = collect_expert_episodes(hopper_expert, "Hopper-v4", 2, seed=0, ep_len=ep_len)
        fell = [len(p["reward"]) < ep_len for p in paths]
        assert terminated == fell == [ep_len == 1000] * 2
        save_minari(paths, terminated, f"zero/{name}", "Hopper-v4", bundled_expert_path("Hopper-v4"), 0)
        for ep, path in zip(minari.load_dataset(f"zero/{name}").iterate_episodes(), paths):
            assert ep.terminations[-1] == (ep_len == 1000) and ep.truncations[-1] == (ep_len == 30)
            assert not ep.terminations[:-1].any() and not ep.truncations[:-1].any()
        for path in load_expert_data(f"minari:zero/{name}"):
            assert path["terminal"].tolist() == [0.0] * (len(path["terminal"]) - 1) + [1.0]


def test_bc_trains_from_a_minari_dataset(hopper_dataset, tmp_path, capsys):
    argv = ["-env", "Hopper-v4", "-ed", f"minari:{DATASET}", "--num_agent_train_steps_per_iter", "20",
            "--eval_batch_size", "50", "--video_log_freq", "-1", "--logdir", str(tmp_path / "runs"), "--quiet",
            "--rollout_workers", "0"]
    assert train_main(argv) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["expert_data"] == f"minari:{DATASET}"
    (row,) = read_metrics(run_dir)
    want = np.mean([p["reward"].sum() for p in load_expert_data(hopper_dataset)])
    assert row["Initial_DataCollection_AverageReturn"] == pytest.approx(want)
    assert np.isfinite(row["Training Loss"])


def test_first_n_trajectories(hopper_dataset, capsys):
    full = load_expert_data(hopper_dataset)
    for source in (hopper_dataset, f"minari:{DATASET}"):
        (first,) = load_expert_data(source, n_traj=1)
        np.testing.assert_array_equal(first["observation"], full[0]["observation"])
        with pytest.raises(BcjaxError, match="--expert_data_trajectories 3 but .* holds 2 trajectories"):
            load_expert_data(source, n_traj=3)
    err = _one_line_error(capsys, train_main(["-env", "Hopper-v4", "-ed", str(hopper_dataset),
                                              "--expert_data_trajectories", "5", "--rollout_workers", "0"]))
    assert "holds 2 trajectories: pass at most 2" in err
    assert "must be positive" in _one_line_error(capsys, train_main(["--expert_data_trajectories", "0"]))


def test_collected_expert_data_has_n_trajectories(tmp_path, capsys, tiny_run):
    """Without --expert_data, --expert_data_trajectories N collects N (and the first 2 are the default's 2,
    which the session's tiny run collected with the same expert, seed and --ep_len)."""
    small = ["-env", "Hopper-v4", "--num_agent_train_steps_per_iter", "10", "--eval_batch_size", "30", "--ep_len", "30",
             "--video_log_freq", "-1", "--logdir", str(tmp_path), "--quiet", "--rollout_workers", "0"]
    assert train_main(small + ["--expert_data_trajectories", "3"]) == 0
    assert "expert data: collected 3 trajectories" in capsys.readouterr().out
    (n3,) = (tmp_path / "expert_data").glob("expert_data_Hopper-v4_*_n3_s1_len30.pkl")
    (n2,) = (tiny_run.logdir / "expert_data").glob(n3.name.replace("_n3_", "_n2_"))  # the same expert file's digest
    three, two = load_expert_data(n3), load_expert_data(n2)
    assert len(three) == 3 and len(two) == 2
    for a, b in zip(three, two):
        np.testing.assert_array_equal(a["observation"], b["observation"])


def test_without_minari_the_error_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "minari", None)  # `import minari` now raises ImportError
    with pytest.raises(BcjaxError, match=r"pip install -e '\.\[minari\]'"):
        load_expert_data("minari:mujoco/hopper/expert-v0")
    err = _one_line_error(capsys, train_main(["-env", "Hopper-v4", "-ed", "minari:mujoco/hopper/expert-v0",
                                              "--logdir", str(tmp_path), "--rollout_workers", "0"]))
    assert "minari package" in err and ".[minari]" in err
    err = _one_line_error(capsys, _collect_script().main(["--minari", DATASET]))
    assert ".[minari]" in err


def test_a_dataset_that_does_not_fit_the_task_is_one_line(hopper_dataset, tmp_path, capsys):
    err = _one_line_error(capsys, train_main(["-env", "Walker2d-v4", "-ed", f"minari:{DATASET}",
                                              "--logdir", str(tmp_path / "runs"), "--rollout_workers", "0"]))
    assert "(recorded on Hopper-v4) has 11-dim observations but Walker2d-v4 gives 17" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    # Right observation size, wrong kind of action: 11-dim Box observations, 3 discrete actions.
    obs_space = gym.spaces.Box(-np.inf, np.inf, (11,), np.float64)
    ep = minari.data_collector.EpisodeBuffer(observations=np.zeros((6, 11)), actions=np.zeros(5, np.int64),
                                             rewards=np.zeros(5), terminations=np.eye(1, 5, 4, dtype=bool)[0],
                                             truncations=np.zeros(5, bool))
    with warnings.catch_warnings():  # Minari warns about each unset optional field
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers("synthetic/discrete-v0", [ep], observation_space=obs_space,
                                           action_space=gym.spaces.Discrete(3))
    info = env_info(make_env("Hopper-v4"))
    with pytest.raises(BcjaxError, match="has 3 discrete actions but Hopper-v4 takes 3-dim actions"):
        load_expert_data("minari:synthetic/discrete-v0", info=info)


def test_bad_sources_and_ids(hopper_dataset, tmp_path, capsys):
    with pytest.raises(BcjaxError, match=r"no local Minari dataset mujoco/hopper/expert-v0 .*minari download"):
        load_expert_data("minari:mujoco/hopper/expert-v0")
    with pytest.raises(BcjaxError, match="is a directory but not a Minari dataset"):
        load_expert_data(tmp_path)
    err = _one_line_error(capsys, _collect_script().main(["-env", "Hopper-v4", "--minari", DATASET]))
    assert f"Minari dataset {DATASET} already exists" in err and "minari delete" in err
    assert "not a Minari dataset id" in _one_line_error(capsys, _collect_script().main(["--minari", "no-version"]))


def test_pickle_and_minari_agree_on_a_real_cs285_file(minari_root, hopper_files):
    """The homework's own expert data, written as Minari episodes and read back, is unchanged."""
    from bcjax.data.minari import save_minari

    expert_file, data_file = hopper_files
    paths = load_expert_data(data_file)
    save_minari(paths, [False] * len(paths), "cs285/hopper-v0", "Hopper-v4", expert_file, 0)
    for got, want in zip(load_expert_data("minari:cs285/hopper-v0"), paths, strict=True):
        for key in ("observation", "action", "reward", "next_observation"):
            assert got[key].dtype == want[key].dtype, key  # float64 observations stay float64
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        np.testing.assert_array_equal(got["terminal"], want["terminal"])  # float32 1/0 vs the file's bools
