"""The train.py CLI: a tiny full run, and a one-line error with a non-zero exit for each bad input."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_expert_dict, write_pickle

from bcjax.data.expert_data import load_expert_data
from bcjax.run.logger import METRICS, read_metrics
from bcjax.run.main import main

REPO = Path(__file__).resolve().parents[2]


def _data(obs_dim: int, act_dim: int, n: int = 60) -> list[dict]:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, obs_dim))
    return [{"observation": obs, "action": rng.normal(size=(n, act_dim)).astype(np.float32),
             # A low return: the random expert's check episode (a few steps) must not fall under half of it.
             "reward": np.full(n, 1 / 64), "next_observation": obs, "terminal": np.eye(1, n, n - 1)[0].astype(bool)}]


@pytest.fixture
def files(tmp_path):
    """A synthetic Hopper-sized (11 -> 3) expert and expert data in the CS285 format."""
    return {
        "epf": str(write_pickle(tmp_path / "expert.pkl", make_expert_dict(11, 3))),
        "ed": str(write_pickle(tmp_path / "data.pkl", _data(11, 3))),
        "logdir": str(tmp_path / "runs"),
        "tmp": tmp_path,
    }


def _args(files, *extra):
    return ["--env_name", "Hopper-v4", "-epf", files["epf"], "-ed", files["ed"], "--logdir", files["logdir"],
            "--num_agent_train_steps_per_iter", "20", "--eval_batch_size", "50", "--batch_size", "50",
            "--video_log_freq", "-1", "--rollout_workers", "0", *extra]


def test_tiny_dagger_run_writes_run_dir(tiny_run):
    run_dir = tiny_run.run_dir  # the session's `train.py --algo dagger -n 2 --exp_name tiny ...`
    assert re.fullmatch(r"q2_tiny_Hopper-v4_\d\d-\d\d-\d{4}_\d\d-\d\d-\d\d", run_dir.name)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["algo"] == "dagger" and cfg["n_iter"] == 2 and cfg["train_batch_size"] == 100
    assert list(run_dir.glob("events.out.tfevents.*"))
    rows = read_metrics(run_dir)
    assert [r["Iteration"] for r in rows] == [0, 1]
    assert all(set(METRICS) <= set(r) for r in rows)
    data = load_expert_data(cfg["expert_data"])
    assert rows[0]["Initial_DataCollection_AverageReturn"] == pytest.approx(np.mean([p["reward"].sum() for p in data]))
    assert "Eval_AverageReturn" in tiny_run.out


def test_the_closing_line_gives_the_start_up_by_part_and_the_fixed_cost(tiny_run):
    (line,) = [x for x in tiny_run.out.splitlines() if x.startswith("time (s): ")]
    got = {m[1]: float(m[2]) for m in re.finditer(r"([a-z][a-z -]*?) (\d+\.\d+)", line[len("time (s): "):])}
    parts = ("imports", "inputs", "checks", "run directory", "learner")
    assert set(parts) <= set(got) and {"rollouts", "training", "evaluation", "total", "fixed cost"} <= set(got)
    assert sum(got[p] for p in parts) <= got["start-up"] + 0.05 * len(parts)  # (each rounded to 0.1)
    assert got["start-up"] <= got["total"]
    work = got["rollouts"] + got["training"] + got["evaluation"]
    assert got["fixed cost"] == pytest.approx(got["total"] - work, abs=0.25)


def _error(capsys, argv, code=2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("extra,message", [
    (["--algo", "bc", "-n", "3"], "BC runs exactly one iteration"),
    (["--algo", "dagger", "-n", "1"], "DAgger needs more than one iteration"),
    (["--algo", "bc", "--do_dagger"], "contradicts"),
    (["--batch_size", "0"], "--batch_size must be positive"),
    (["--train_batch_size", "-5"], "--train_batch_size must be positive"),
    (["--size", "0"], "--size must be positive"),
    (["-lr", "0"], "--learning_rate must be positive"),
    (["--ep_len", "0"], "--ep_len must be positive"),
    (["--eval_num_envs", "0"], "--eval_num_envs must be positive"),
    (["--n_layers", "-1"], "--n_layers must be 0 or more"),
    (["--rollout_workers", "300"], "--rollout_workers is a thread count, at most 256"),
    (["--env_name", "NoSuchTask-v9"], "unknown environment id 'NoSuchTask-v9'"),
])
def test_bad_flags(files, capsys, extra, message):
    assert message in _error(capsys, _args(files, *extra))
    assert not list(Path(files["logdir"]).glob("q*"))  # no run directory or not any(Path(files["logdir"]).iterdir())


def test_bad_files(files, capsys):
    tmp = files["tmp"]
    missing = _error(capsys, _args(files) + ["-epf", str(tmp / "nope.pkl")])
    assert "expert policy file not found" in missing and "--expert_policy_file" in missing
    (tmp / "text.pkl").write_text("hello")
    assert "not a readable pickle" in _error(capsys, _args(files) + ["-ed", str(tmp / "text.pkl")])
    wrong = write_pickle(tmp / "wrong.pkl", {"hidden": 1})
    assert "not a CS285 expert policy" in _error(capsys, _args(files) + ["-epf", str(wrong)])
    mismatch = write_pickle(tmp / "cheetah_data.pkl", _data(17, 6))
    err = _error(capsys, _args(files) + ["-ed", str(mismatch)])
    assert "17-dim observations but Hopper-v4 gives 11" in err
    nan = _data(11, 3)
    nan[0]["observation"][3, 2] = np.nan
    assert "NaN" in _error(capsys, _args(files) + ["-ed", str(write_pickle(tmp / "nan.pkl", nan))])


@pytest.mark.slow
def test_script_exits_nonzero_without_traceback(files):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), *_args(files, "--algo", "bc", "-n", "2")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: BC runs exactly one iteration, got --n_iter 2: drop --n_iter or use --algo dagger"


def test_dagger_refuses_expert_data_without_its_expert(files, capsys):
    args = ["--env_name", "Hopper-v4", "-ed", files["ed"], "--logdir", files["logdir"], "--do_dagger", "-n", "2",
            "--rollout_workers", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: DAgger relabels with the expert that made --expert_data") and "\n" not in err
    assert not list(Path(files["logdir"]).glob("q*"))  # no run directory


def test_bc_from_expert_data_alone_needs_no_expert(files, capsys):
    args = ["--env_name", "Hopper-v4", "-ed", files["ed"], "--logdir", files["logdir"], "--video_log_freq", "-1",
            "--num_agent_train_steps_per_iter", "5", "--eval_batch_size", "20", "--quiet", "-ngpu", "--rollout_workers", "0"]
    assert main(args) == 0
    assert "expert policy: none" in capsys.readouterr().out
    (run_dir,) = Path(files["logdir"]).iterdir()
    assert run_dir.name.startswith("q1_run_Hopper-v4_")  # BC's prefix and the default --exp_name
    row = read_metrics(run_dir)[-1]
    # every evaluation episode's return is kept, and the sigma / MSE diagnostics sit beside the NLL
    assert np.mean(row["Eval_EpisodeReturns"][0]) == pytest.approx(row["Eval_AverageReturn"])
    assert row["Policy_StdMin"] <= row["Policy_StdMean"] <= row["Policy_StdMax"] and row["Training MSE"] > 0


def test_an_expert_that_does_not_fit_its_data_is_refused(tmp_path, capsys):
    from bcjax.data.bundled import bundled_expert_path
    from bcjax.data.expert import load_expert
    from bcjax.data.expert_data import collect_expert_paths, save_expert_data

    # Data from the bundled Hopper expert, then a random expert claiming to have made it.
    data = collect_expert_paths(load_expert(bundled_expert_path("Hopper-v4")), "Hopper-v4", 1, 0, ep_len=200)
    save_expert_data(data, tmp_path / "data.pkl")
    epf = write_pickle(tmp_path / "random.pkl", make_expert_dict(11, 3))
    args = ["--env_name", "Hopper-v4", "-epf", str(epf), "-ed", str(tmp_path / "data.pkl"), "--logdir",
            str(tmp_path / "runs"), "--ep_len", "200", "--video_log_freq", "-1", "--quiet",
            "--num_agent_train_steps_per_iter", "5", "--eval_batch_size", "20", "--rollout_workers", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(r"error: the expert returns -?[\d.]+ on Hopper-v4 \(the best of 3 episodes\), under half of its data's [\d.]+: .*"
                        r"--allow_weak_expert to train anyway", err)
    assert not list((tmp_path / "runs").glob("q*"))  # no run directory
    assert main([*args, "--allow_weak_expert"]) == 0


@pytest.mark.slow
def test_help_states_every_default():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "--help"], capture_output=True,
                         text=True, check=True).stdout
    # One entry per flag: from its line to the next line that starts a flag.
    entries = {m.group(1): m.group(0) for m in re.finditer(r"^  (-[\w-]+)[^\n]*(?:\n(?!  -)[^\n]*)*", out, re.M)}
    for flag, default in [("--learning_rate", "0.005"), ("--n_layers", "2"), ("--size", "64"), ("--seed", "1"),
                          ("--max_replay_buffer_size", "1000000"), ("--init", "torch")]:
        entry = next(e for e in entries.values() if re.match(rf"\s+(?:\S+ )*?{flag}\b", e.split("\n")[0]))
        assert f"(default: {default})" in " ".join(entry.split()), flag
    assert "-ngpu" in out and "negative log-likelihood" in out


def test_every_config_field_is_a_flag_with_its_default_in_help():
    import dataclasses

    from bcjax.run.config import Config, parse_config
    from bcjax.run.flags import build_parser

    out = " ".join(build_parser(Config).format_help().split())
    for f in dataclasses.fields(Config):
        assert f"--{f.name}" in out, f.name
    for short in ("-epf", "-ed", "-env", "-exp", "-n", "-lr", "-ngpu", "--do_dagger"):
        assert short in out
    assert parse_config([]) == Config() and Config().learning_rate == 5e-3
    cfg = parse_config(["-epf", "e.pkl", "-ed", "minari:x", "-env", "Hopper-v4", "-exp", "a", "-n", "4", "-lr", "0.1",
                        "-ngpu", "--do_dagger"])
    assert (cfg.env_name, cfg.exp_name, cfg.n_iter, cfg.learning_rate, cfg.no_gpu, cfg.algo) == (
        "Hopper-v4", "a", 4, 0.1, True, "dagger")
    assert cfg.expert_data == "minari:x" and Path(cfg.expert_policy_file).is_absolute()


def test_given_flags_are_only_those_given():
    from bcjax.run.config import given_flags

    assert given_flags(["--resume", "r", "-n", "3", "--quiet"]) == {"resume": "r", "n_iter": 3, "quiet": True}
    assert given_flags(["--do_dagger"]) == {"algo": "dagger"} and given_flags([]) == {}


def test_a_config_made_in_code_is_checked_and_resolved():
    from bcjax.errors import BcjaxError
    from bcjax.run.config import DEFAULT_DAGGER_ITERS, Config

    assert (Config().algo, Config().n_iter) == ("bc", 1)
    assert Config(algo="dagger").n_iter == DEFAULT_DAGGER_ITERS
    for kw, message in [({"n_iter": 3}, "BC runs exactly one iteration"), ({"size": 0}, "--size must be positive"),
                        ({"activation": "gelu"}, "--activation 'gelu': choose from"),
                        ({"exp_name": "a/b"}, "must be a plain name")]:
        with pytest.raises(BcjaxError, match=message):
            Config(**kw)
    with pytest.raises(BcjaxError, match="DAgger needs more than one iteration"):
        Config(algo="dagger").replace(n_iter=1)


def test_bad_types_and_choices_are_argparse_errors(capsys):
    for argv in (["--size", "big"], ["--activation", "gelu"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and capsys.readouterr().err.startswith("usage: train.py")


@pytest.mark.parametrize("env, argv, want", [
    ({}, [], "0"),  # unset: --which_gpu's default
    ({"CUDA_VISIBLE_DEVICES": "3"}, [], "3"),  # an existing choice is kept
    ({"CUDA_VISIBLE_DEVICES": "3"}, ["--which_gpu", "1"], "1"),  # a given --which_gpu wins
])
def test_which_gpu_and_cuda_visible_devices(monkeypatch, env, argv, want):
    from bcjax.run.config import given_flags
    from bcjax.run.main import _select_device, resolve_config

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    given = given_flags(argv)
    _select_device(resolve_config(given), given)
    assert __import__("os").environ["CUDA_VISIBLE_DEVICES"] == want


def test_entry_points_share_one_default_task():
    from bcjax.experts.collection import CollectArgs
    from bcjax.experts.training import ExpertArgs
    from bcjax.run.config import DEFAULT_ENV, Config
    from bcjax.sweeps.trials import SweepArgs

    assert {Config().env_name, CollectArgs().env_name, ExpertArgs().env_name, SweepArgs(out="x").env_name} == {DEFAULT_ENV}


@pytest.mark.slow
def test_help_and_flag_errors_import_no_jax():
    """Every entry point's --help and a bad flag answer before JAX is imported (it starts slowly, and must not
    pick a device before --no_gpu is seen)."""
    code = """
import importlib, sys
for mod in ("bcjax.run.main", "bcjax.run.evaluate", "bcjax.experts.collection", "bcjax.experts.training",
            "bcjax.run.plots", "bcjax.sweeps.sweep"):
    for argv in (["--help"], ["--no_such_flag"]):
        try:
            importlib.import_module(mod).main(argv)
        except SystemExit as e:
            assert e.code == (0 if argv == ["--help"] else 2), (mod, argv, e.code)
assert "jax" not in sys.modules
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
