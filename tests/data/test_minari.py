"""Minari datasets as expert data: the round trip with the CS285 pickle, BC from a dataset, and
the one-line errors (missing package, mismatched spaces, too few trajectories, taken ids), and
Minari files as untrusted input: damaged or crafted HDF5 files and metadata, memory bombs, ids that
are paths, and a metadata.json that would run code (docs/RELIABILITY.md lists each case)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from tiny_runs import hopper_expert

from bcjax.acting.envs import env_info, make_env
from bcjax.data.bundled import bundled_expert_path
from bcjax.data.expert_data import collect_expert_episodes, load_expert_data
from bcjax.data.safe_pickle import memory_budget
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
    assert "(recorded on 'Hopper-v4') has 11-dim observations but Walker2d-v4 gives 17" in err
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


# ---------------------------------------------------------------- untrusted files

FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")
DAMAGED = "tt/damaged-v0"


def _synthetic(dataset_id: str, data_format: str = "hdf5") -> Path:
    """Hopper-sized random episodes of 20 and 30 steps, written by Minari itself; the dataset's data folder."""
    rng = np.random.default_rng(0)
    episodes = [minari.data_collector.EpisodeBuffer(
        observations=rng.normal(size=(t + 1, 11)).astype(np.float32), actions=rng.normal(size=(t, 3)).astype(np.float32),
        rewards=np.ones(t), terminations=np.eye(1, t, t - 1, dtype=bool)[0], truncations=np.zeros(t, bool)) for t in (20, 30)]
    with warnings.catch_warnings():  # Minari warns about each unset optional field
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(dataset_id, episodes, observation_space=gym.spaces.Box(-np.inf, np.inf, (11,), np.float32),
                                           action_space=gym.spaces.Box(-1, 1, (3,), np.float32), data_format=data_format)
    return minari.storage.get_dataset_path(dataset_id) / "data"


def _edit_metadata(data_dir: Path, **changes) -> None:
    """Change metadata.json's entries (None removes one)."""
    meta = {**json.loads((data_dir / "metadata.json").read_text()), **changes}
    (data_dir / "metadata.json").write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))


def _flip(file: Path, at: int) -> None:
    data = bytearray(file.read_bytes())
    data[at] ^= 0xFF
    file.write_bytes(bytes(data))


def _cut(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _h5(data_dir: Path, edit) -> None:
    import h5py

    with h5py.File(data_dir / "main_data.hdf5", "a") as f:
        edit(f)


def _external_link(f) -> None:  # episode 0's observations in another file (here a valid array)
    import h5py

    other = Path(f.filename).with_name("elsewhere.hdf5")
    with h5py.File(other, "w") as g:
        g["obs"] = np.zeros((21, 11), np.float32)
    del f["episode_0/observations"]
    f["episode_0/observations"] = h5py.ExternalLink(str(other), "/obs")


def _external_storage(f) -> None:  # the raw bytes of episode 0's observations in another file
    raw = Path(f.filename).with_name("elsewhere.bin")
    raw.write_bytes(bytes(21 * 11 * 4))
    del f["episode_0/observations"]
    f["episode_0"].create_dataset("observations", (21, 11), "f4", external=[(str(raw), 0, 21 * 11 * 4)])


def _text_rewards_h5(f) -> None:
    del f["episode_1/rewards"]
    f["episode_1/rewards"] = ["1"] * 30


HDF5_FAULTS = {
    "truncated": (lambda d: _cut(d / "main_data.hdf5"), r"is not readable \(OSError: .*truncated file"),
    "bit-flipped signature": (lambda d: _flip(d / "main_data.hdf5", 3), r"is not readable \(OSError: .*file signature not found"),
    "bit-flipped heap": (lambda d: _flip(d / "main_data.hdf5", (d / "main_data.hdf5").read_bytes().index(b"HEAP")),
                         r"is not readable \(RuntimeError: .*bad local heap signature"),
    "total_episodes past the file": (lambda d: _edit_metadata(d, total_episodes=5),
                                     "metadata.json declares 5 episodes but it has no episode 2"),
    **{f"no {key}": (lambda d, key=key: _h5(d, lambda f: f.__delitem__(f"episode_1/{key}")), f"episode 1 has no {key} array")
       for key in FIELDS},
    "text rewards": (lambda d: _h5(d, _text_rewards_h5), "episode 1 has no rewards array"),
    "an external link": (lambda d: _h5(d, _external_link), "episode 0 has no observations array"),
    "external storage": (lambda d: _h5(d, _external_storage), "episode 0 has no observations array"),
}


@pytest.mark.parametrize("fault", list(HDF5_FAULTS))
def test_damaged_hdf5_dataset_is_one_line(minari_root, tmp_path, capsys, fault):
    damage, message = HDF5_FAULTS[fault]
    damage(_synthetic(DAMAGED))
    err = _one_line_error(capsys, train_main(["-env", "Hopper-v4", "-ed", f"minari:{DAMAGED}", "--logdir", str(tmp_path / "runs")]))
    assert re.search(message, err), err
    assert err.startswith(f"error: Minari dataset {DAMAGED}") and err.endswith("download it again"), err


def test_metadata_is_read_as_data_not_run(minari_root, tmp_path):
    """metadata.json is untrusted too: without spaces Minari would gym.make the env_spec it gives (here
    os.system), and it would build a Box of any declared shape (here 10^12 floats); bcjax reads the entries."""
    from gymnasium.envs.registration import EnvSpec

    canary = tmp_path / "ran"
    spec = EnvSpec(id="Evil-v0", entry_point="os:system", kwargs={"command": f"touch {canary}"})
    data_dir = _synthetic(DAMAGED)
    _edit_metadata(data_dir, observation_space=None, env_spec=spec.to_json())
    with pytest.raises(BcjaxError, match=r"is not readable \(KeyError: 'observation_space'\): download it again"):
        load_expert_data(f"minari:{DAMAGED}")
    assert not canary.exists()
    huge = {"type": "Box", "dtype": "float64", "shape": [10**12], "low": 0, "high": 1}
    _edit_metadata(data_dir, observation_space=json.dumps(huge), env_spec=None)
    tracemalloc.start()
    try:
        with pytest.raises(BcjaxError, match="has 1000000000000-dim observations but Hopper-v4 gives 11"):
            load_expert_data(f"minari:{DAMAGED}", info=env_info(make_env("Hopper-v4")))
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()
    _edit_metadata(data_dir, observation_space=json.dumps({"type": "Dict", "subspaces": {}}))
    with pytest.raises(BcjaxError, match="has a 'Dict' observation space; bcjax trains on flat Box observations"):
        load_expert_data(f"minari:{DAMAGED}")


def test_an_arrow_dataset_is_refused_in_one_line(minari_root):
    """bcjax reads Minari's HDF5 layout (its default, and what `minari download` gets), checked as above."""
    _synthetic(DAMAGED, "arrow")
    with pytest.raises(BcjaxError, match=f"Minari dataset {DAMAGED} is stored as 'arrow'; bcjax reads Minari's HDF5"):
        load_expert_data(f"minari:{DAMAGED}")


def _rewrite(data_dir: Path, steps: int, total: int = 2, gzip: bool = False, chunks=True, link: bool = False) -> None:
    """main_data.hdf5 as `total` episodes declaring `steps` steps each (two chunks of observations written
    as zeros when gzip'd, nothing otherwise: unwritten chunks read as zeros too); with `link`, every
    episode's fields are hard links to episode 0's."""
    import h5py

    with h5py.File(data_dir / "main_data.hdf5", "w") as f:
        for i in range(total):
            group = f.create_group(f"episode_{i}")
            for key, shape, dtype in (("observations", (steps + 1, 11), "f8"), ("actions", (steps, 3), "f4"),
                                      ("rewards", (steps,), "f8"), ("terminations", (steps,), bool), ("truncations", (steps,), bool)):
                if link and i:
                    group[key] = f[f"episode_0/{key}"]
                    continue
                ds = group.create_dataset(key, shape, dtype, chunks=chunks if key == "observations" else True,
                                          compression="gzip" if gzip else None)
                if gzip and key == "observations":
                    ds[: 1 << 17] = 0
                elif link:
                    ds[...] = 0
    _edit_metadata(data_dir, total_episodes=total)


def _huge_chunk(data_dir: Path) -> None:
    """A chunk may be larger than its data when the first dimension is unlimited: decompression fills all of it."""
    def edit(f):
        del f["episode_0/observations"]
        f.create_dataset("episode_0/observations", data=np.zeros((21, 11)), maxshape=(None, 11), chunks=(1 << 20, 11),
                         compression="gzip", compression_opts=1)

    _h5(data_dir, edit)


BOMBS = {  # each file is under 3 MB
    "an unwritten chunked dataset of 2e8 steps": lambda d: _rewrite(d, steps=200_000_000),
    "gzip'd zeros of 5e7 steps": lambda d: _rewrite(d, steps=50_000_000, gzip=True, chunks=(1 << 16, 11)),
    "one array hard-linked from 200 episodes": lambda d: _rewrite(d, steps=20_000, total=200, link=True),
    "a 20-step dataset in 90 MB gzip'd chunks": _huge_chunk,
}


@pytest.mark.parametrize("bomb", [pytest.param(b, marks=pytest.mark.slow) if "gzip" in b else b for b in BOMBS])  # 2 s to write
def test_hdf5_memory_bombs_are_refused_before_anything_is_read(minari_root, bomb):
    data_dir = _synthetic(DAMAGED)
    BOMBS[bomb](data_dir)
    size = (data_dir / "main_data.hdf5").stat().st_size
    assert size < 3 << 20
    tracemalloc.start()
    try:
        with pytest.raises(BcjaxError, match=rf"Minari dataset {DAMAGED} was refused: its arrays declare \d+ bytes, "
                                             rf"more than the {memory_budget(size)} its {size} bytes allow"):
            load_expert_data(f"minari:{DAMAGED}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.slow  # a real subprocess
def test_a_memory_bomb_is_refused_in_bounded_memory_by_a_fresh_process(minari_root):
    """Peak RSS of a process that only loads the 2e8-step bomb: HDF5's own allocations count too. (VmHWM,
    not ru_maxrss, which keeps the forking parent's peak across exec.)"""
    _rewrite(_synthetic(DAMAGED), steps=200_000_000)
    code = ("import re\nfrom bcjax.data.expert_data import load_expert_data\nfrom bcjax.errors import BcjaxError\n"
            f"try:\n    load_expert_data('minari:{DAMAGED}')\nexcept BcjaxError as e:\n    print(e)\n"
            "print(re.search(r'VmHWM:\\s*(\\d+) kB', open('/proc/self/status').read())[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    assert "was refused: its arrays declare" in out[0]
    assert int(out[1]) < 200 << 10  # KiB: the interpreter, numpy, h5py and Minari (the data would take 44 GB)


@pytest.mark.parametrize("source", ["minari:{outside}", "minari:../outside-v0", "minari:tt/../../outside-v0", "minari:tt/x",
                                    "minari:"])
def test_a_dataset_id_is_not_a_path(minari_root, tmp_path, capsys, source):
    """An id names a dataset under MINARI_DATASETS_PATH, checked as Minari's writer checks ids (the first three
    read the valid dataset beside that folder before); a directory is given as a path."""
    _synthetic("tt/outside-v0").parent.rename(tmp_path / "outside-v0")
    source = source.format(outside=tmp_path / "outside-v0")
    err = _one_line_error(capsys, train_main(["-env", "Hopper-v4", "-ed", source, "--logdir", str(tmp_path / "runs")]))
    assert f"--expert_data {source!r} is not a Minari dataset id: use (namespace/)name-v(version)" in err
    assert "given as a path, without minari:" in err
    assert len(load_expert_data(tmp_path / "outside-v0")) == 2  # as a path, it is read


def test_a_dataset_directory_is_read_as_a_path(minari_root, tmp_path):
    data_dir = _synthetic("tt/elsewhere-v0")
    moved = tmp_path / "moved-v0"
    data_dir.parent.rename(moved)  # outside MINARI_DATASETS_PATH
    for source in (moved, moved / "data"):
        assert [len(p["reward"]) for p in load_expert_data(source)] == [20, 30]


def test_undamaged_synthetic_datasets_load(minari_root):
    _synthetic("tt/hdf5-v0")
    paths = load_expert_data("minari:tt/hdf5-v0")
    assert [len(p["reward"]) for p in paths] == [20, 30]
    assert all(p["observation"].dtype == np.float32 and p["reward"].dtype == np.float64 for p in paths)
