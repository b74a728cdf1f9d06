"""scripts/sweep.py: grids checked before anything starts, seeds packed into trials, and real sweeps on an
embedded Ray (a summary with the right seeds, a failing trial beside a finished one, a resume that skips it)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from bcjax.data.bundled import bundled_expert_path
from bcjax.errors import BcjaxError
from bcjax.run.logger import read_metrics
from bcjax.sweeps.sweep import main
from bcjax.sweeps.trials import auto_seeds_per_trial, build_trials, parse_grid, parse_seeds, seed_chunks, settings_of

REPO = Path(__file__).resolve().parents[2]

# Tiny Hopper runs on the bundled expert: each trial's work takes well under a second (JAX start-up aside).
TINY = ["--env_name", "Hopper-v4", "--num_agent_train_steps_per_iter", "5", "--eval_batch_size", "20",
        "--batch_size", "20", "--ep_len", "20", "--video_log_freq", "-1", "--train_batch_size", "10"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("flags, says", [
    (["--grid", "sizes=32,64"], "no flag --sizes"),
    (["--grid", "size=32,big"], "invalid int value: 'big'"),
    (["--grid", "learning_rate=-1"], "--learning_rate must be positive"),
    (["--grid", "deterministic_eval=yes"], "deterministic_eval=true,false"),
    (["--grid", "seed=1,2"], "use --seeds"),
    (["--grid", "size"], "NAME=V1,V2"),
    (["--seeds", "1-x"], "not a seed list"),
    (["--algo", "bc,ppo"], "--algo 'ppo'"),
    (["--sizes", "32"], "unknown flag --sizes"),
    (["--num_seeds", "3"], "use --seeds"),
    (["--sample", "learning_rate=loguniform:0:1"], "loguniform:A:B (0 < A < B)"),
    (["--algo", "bc", "--grid", "n_iter=3"], "use --n_iter"),
    (["--scalar_log_freq", "-1"], "drop --scalar_log_freq -1"),
    (["--metric", "Eval_Return"], "not a logged metric"),
])
def test_bad_grid_is_one_line_before_anything_starts(tmp_path, capsys, flags, says):
    out = tmp_path / "sweep"
    assert main([*TINY, "--out", str(out), *flags]) == 2
    assert says in _error_line(capsys)
    assert not out.exists()  # nothing started


def test_without_ray_the_error_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what a missing package looks like to import
    assert main([*TINY, "--out", str(tmp_path / "s")]) == 2
    assert "pip install -e '.[sweep]'" in _error_line(capsys)


def test_seeds_and_packing():
    assert parse_seeds("1-5") == [1, 2, 3, 4, 5] and parse_seeds("1-3,7") == [1, 2, 3, 7]
    with pytest.raises(BcjaxError):
        parse_seeds("1,1")
    # Consecutive seeds share a trial (s..s+K-1 side by side), at most K per trial.
    assert seed_chunks([1, 2, 3, 4, 5], 2) == [(1, 2), (3, 4), (5,)]
    assert seed_chunks([1, 2, 3, 7, 8], 5) == [(1, 2, 3), (7, 8)]
    # Free slots spread seeds; without spare slots all seeds of a setting share one trial.
    assert auto_seeds_per_trial(5, n_groups=16, slots=2) == 5
    assert auto_seeds_per_trial(5, n_groups=1, slots=16) == 1
    assert auto_seeds_per_trial(5, n_groups=6, slots=16) == 3


def test_grid_and_random_search_settings():
    grid = parse_grid(["learning_rate=1e-3,5e-3", "--size=32,64"])
    assert settings_of(grid) == [{"learning_rate": a, "size": b} for a in ("1e-3", "5e-3") for b in ("32", "64")]
    draws = settings_of({"size": ["32"]}, ["learning_rate=loguniform:1e-4:1e-2", "n_layers=randint:1:3"], 20, 7)
    assert draws == settings_of({"size": ["32"]}, ["learning_rate=loguniform:1e-4:1e-2", "n_layers=randint:1:3"], 20, 7)
    assert all(1e-4 <= float(d["learning_rate"]) <= 1e-2 and d["n_layers"] in ("1", "2", "3") for d in draws)
    assert len({d["learning_rate"] for d in draws}) == 20


def test_trials_carry_their_configs():
    trials = build_trials(["Hopper-v4", "Ant-v4"], ["bc", "dagger"], [{"deterministic_eval": "true"}], [1, 2, 3],
                          {"size": 32, "expert_policy_file": "experts/{env_base}.pkl"}, n_iter=4, seeds_per_trial=2)
    assert len(trials) == 2 * 2 * 2 and len({t.key for t in trials}) == 8
    t = next(t for t in trials if t.group[:2] == ("Ant-v4", "dagger") and t.seeds == (3,))
    cfg = t.config
    assert (cfg.seed, cfg.num_seeds, cfg.n_iter, cfg.size, cfg.deterministic_eval) == (3, 1, 4, 32, True)
    assert cfg.expert_policy_file == str(Path("experts/Ant.pkl").resolve())
    bc = next(t for t in trials if t.config.algo == "bc")
    assert bc.config.n_iter == 1  # BC runs its one iteration
    # A trial's command line gives back its config.
    from bcjax.run.config import config_argv, parse_config

    argv = config_argv(bc.config)
    assert parse_config(config_argv(cfg)) == cfg and argv[:2] == ["--algo", "bc"] and "--env_name" in argv


def test_passed_through_flags_are_train_py_fields():
    from bcjax.sweeps.trials import train_flags

    assert train_flags(["-lr", "1e-3", "--normalize_obs", "-ed", "x.pkl"]) == {
        "learning_rate": 1e-3, "normalize_obs": True, "expert_data": "x.pkl"}
    with pytest.raises(BcjaxError, match="invalid int value"):
        train_flags(["--size", "big"])


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _run_dir(trial: dict) -> Path:
    # The summary names run directories relative to the repository: it must not hold this machine's paths.
    assert not Path(trial["run_dir"]).is_absolute()
    return Path(os.path.normpath(REPO / trial["run_dir"]))


@pytest.fixture
def stale_ray_cluster():
    """The address file a `ray start` leaves in Ray's temp directory, naming a cluster that is gone:
    without --address a sweep must start its own Ray, not attach to it."""
    from ray._private.utils import get_ray_address_file

    file = Path(get_ray_address_file(None))
    before = file.read_text() if file.is_file() else None
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("127.0.0.1:1")
    yield
    if before is None:
        file.unlink(missing_ok=True)
    else:
        file.write_text(before)


@pytest.mark.slow
def test_sweep_pools_seeds_across_trials_into_one_summary(tmp_path, stale_ray_cluster):
    """Seeds 1-3 packed 2 + 1: two trials on the embedded Ray, one group of 3 seeds in the summary
    (even though `ray start` left a dead cluster's address behind)."""
    out = tmp_path / "sweep"
    assert main([*TINY, "--algo", "dagger", "-n", "2", "--seeds", "1-3", "--seeds_per_trial", "2",
                 "--out", str(out)]) == 0
    s = _summary(out)
    assert [t["status"] for t in s["trials"]] == ["finished", "finished"]
    assert [t["seeds"] for t in s["trials"]] == [[1, 2], [3]]
    (group,) = s["groups"]
    assert group["n"] == 3 and group["iterations"] == 2
    # The numbers agree with the trials' own bcjax run directories.
    finals = []
    for t in s["trials"]:
        rows = read_metrics(_run_dir(t))
        assert [r["Iteration"] for r in rows] == [0, 1]
        cfg = json.loads((_run_dir(t) / "config.json").read_text())
        assert (cfg["seed"], cfg["num_seeds"]) == (t["seeds"][0], len(t["seeds"]))
        finals += rows[-1]["per_seed"]["Eval_AverageReturn"]
    assert group["mean"] == pytest.approx(np.mean(finals)) and group["std"] == pytest.approx(np.std(finals))
    assert group["iqm"] == pytest.approx(np.mean(finals))  # of 3 values a 25% trim from each end removes none
    # Tune's own files, one report per iteration.
    for t in s["trials"]:
        tune_dir = out / "tune" / t["key"]
        assert len((tune_dir / "result.json").read_text().splitlines()) == 2
        assert (tune_dir / "progress.csv").is_file() and list(tune_dir.glob("events.out.tfevents.*"))
    assert "| Hopper-v4 | dagger | - | 3 |" in (out / "summary.md").read_text()
    assert (out / "summary.csv").read_text().count("\n") == 2
    assert {p.name for p in (out / "plots").iterdir()} >= {"learning_curves.png", "performance_profile.png"}


@pytest.mark.slow
def test_failing_trial_is_reported_and_a_resumed_sweep_skips_finished_ones(tmp_path, capsys):
    later = tmp_path / "later.pkl"  # the second setting's expert does not exist yet: that trial fails
    out = tmp_path / "sweep"
    argv = [*TINY, "--algo", "bc", "--seeds", "1-2", "--out", str(out),
            "--grid", f"expert_policy_file={bundled_expert_path('Hopper-v4')},{later}"]
    assert main(argv) == 1
    s = _summary(out)
    ok, bad = s["trials"]
    assert ok["status"] == "finished" and bad["status"] == "failed"
    assert bad["error"] == f"expert policy file not found: {later} (check --expert_policy_file)"
    assert f"`{bad['key']}`: failed: expert policy file not found" in (out / "summary.md").read_text()
    assert [g.get("n", 0) for g in s["groups"]] == [2, 0]
    finished_run = _run_dir(ok)
    finished_result = (out / "tune" / ok["key"] / "result.json").read_text()
    stamp = (finished_run / "metrics.jsonl").stat().st_mtime_ns

    shutil.copy(bundled_expert_path("Hopper-v4"), later)
    assert main(argv) == 0
    assert "resuming the sweep" in capsys.readouterr().out
    s = _summary(out)
    assert [t["status"] for t in s["trials"]] == ["finished", "finished"]
    assert [g["n"] for g in s["groups"]] == [2, 2]
    # The finished trial did not run again: same run directory, untouched, same Tune results.
    assert _run_dir(s["trials"][0]) == finished_run
    assert (finished_run / "metrics.jsonl").stat().st_mtime_ns == stamp
    assert list((out / "runs" / ok["key"]).glob("q1_*")) == [finished_run]
    assert (out / "tune" / ok["key"] / "result.json").read_text() == finished_result
    # Both experts are the same file, and seeds 1-2 the same seeds: the two settings' numbers agree.
    a, b = s["groups"]
    assert a["mean"] == pytest.approx(b["mean"]) and a["std"] == pytest.approx(b["std"])

    # A different sweep in the same folder is refused rather than mixed in.
    assert main([*argv[:-1], f"expert_policy_file={later}"]) == 2
    assert "holds a different sweep" in _error_line(capsys)


def test_completed_trials_are_recorded_with_their_reported_rows(tmp_path, capsys):
    """A trial's rows are what it reported (not its run directory, which may be on another node's disk), without
    Tune's bookkeeping or extras; a completed trial is recorded (with its node and run directory), a failed or
    interrupted one is not, and a torn last line (a killed sweep) is skipped."""
    from types import SimpleNamespace

    from bcjax.sweeps.runner import _completed, _outcome, _recorder

    (trial,) = build_trials(["Hopper-v4"], ["dagger"], [{}], [1], n_iter=3)
    tune_trial = SimpleNamespace(config={"trial": {"key": trial.key}})
    rows = [{"Iteration": i, "Eval_AverageReturn": float(20 + i), "per_seed": {"Eval_AverageReturn": [0.0]},
             "Eval_EpisodeReturns": [1.0, 2.0]} for i in range(3)]
    extras = {"run_dir": "/x/q2_run", "wall_s": 1.5, "node_id": "abc", "node_ip": "10.0.0.2", "training_iteration": 3}
    path = tmp_path / "trials.jsonl"
    recorder = _recorder(path, "Eval_AverageReturn")

    def run(n: int, complete: bool) -> None:
        recorder.on_trial_start(0, [], tune_trial)
        for r in rows[:n]:
            recorder.on_trial_result(0, [], tune_trial, {**r, **extras})
        if complete:
            recorder.on_trial_complete(0, [], tune_trial)

    run(2, complete=False)  # failed or interrupted: nothing recorded, its rows kept for the summary
    assert _completed(path) == {} and [r["Iteration"] for r in recorder.rows[trial.key]] == [0, 1]
    o = _outcome(trial, None, "RuntimeError: boom", recorder.rows[trial.key])
    assert (o.status, o.error, len(o.rows)) == ("failed", "RuntimeError: boom", 2)
    assert _outcome(trial, None, None, []).status == "unfinished"
    run(3, complete=True)  # the retried trial's rows start afresh
    with path.open("a") as f:
        f.write('{"key": "torn')
    record = _completed(path)[trial.key]
    o = _outcome(trial, record, None, [])
    assert [r["Iteration"] for r in o.rows] == [0, 1, 2] and o.rows[-1]["Eval_AverageReturn"] == 22.0
    assert set(o.rows[0]) == {"Iteration", "Eval_AverageReturn", "per_seed"}  # Tune's bookkeeping dropped
    assert (o.status, o.run_dir, o.wall_s, o.node) == ("finished", "/x/q2_run", 1.5, {"ip": "10.0.0.2", "id": "abc"})
    assert _outcome(trial, {**record, "rows": record["rows"][:2]}, None, []).status == "stopped early"
    # The sweep's terminal: a line per trial event.
    assert capsys.readouterr().out.splitlines()[-3:] == [
        f"trial {trial.key}: started", f"trial {trial.key}: started",
        f"trial {trial.key}: completed, Eval_AverageReturn 22.0 at iteration 2, 1.5 s on 10.0.0.2"]


def test_repo_relative_names_no_machine_path():
    from bcjax.sweeps.summary import REPO as repo
    from bcjax.sweeps.summary import repo_relative

    assert (repo / "scripts" / "train.py").is_file()  # the repository, not the package
    assert repo_relative(str(repo / "scripts" / "train.py")) == "scripts/train.py"
    assert repo_relative(str(repo.parent / "shared" / "cs285" / "x.pkl")) == "../shared/cs285/x.pkl"
    assert repo_relative("--seed") == "--seed"


def test_results_json_holds_no_machine_paths():
    text = (REPO / "docs" / "results.json").read_text()
    commands = [c for c in json.loads(text)["bc"].values()]
    assert commands and all(c["command"].startswith("scripts/train.py ") for c in commands)
    assert " /" not in text and '": "/' not in text  # no absolute path anywhere in the file


@pytest.mark.parametrize("address, says", [
    ("127.0.0.1:1", "no Ray cluster answers at --address 127.0.0.1:1"),
    ("ray://127.0.0.1:1", "pip install 'ray[client]'"),
])
def test_an_address_where_no_cluster_answers_is_one_line_at_once(tmp_path, capsys, address, says):
    """Ray itself would retry for ever (and ray:// without Ray Client is a traceback)."""
    import importlib.util
    import time

    import ray

    ray.shutdown()  # an embedded Ray of an earlier test would be used instead
    if address.startswith("ray://") and importlib.util.find_spec("grpc") is not None:
        says = "no Ray cluster answers"  # Ray Client is installed: the address is probed as any other
    start = time.time()
    assert main([*TINY, "--out", str(tmp_path / "s"), "--address", address]) == 2
    assert says in _error_line(capsys) and time.time() - start < 30


def _two_node_cluster(monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # an embedded Ray of an earlier test
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the nodes' workers import this bcjax
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster


@pytest.mark.slow
def test_a_sweep_on_two_nodes_keeps_every_run_directory_under_its_storage(tmp_path, monkeypatch):
    """A head and one more node (one CPU each) on this machine: the trials run on both, report their node, and
    every run directory (with its trial.log) ends up under --storage; the summary counts every seed."""
    import ray

    cluster = _two_node_cluster(monkeypatch)
    storage, out = tmp_path / "storage", tmp_path / "sweep"
    try:
        assert main([*TINY, "--seeds", "1-4", "--seeds_per_trial", "1", "--out", str(out), "--address", cluster.address,
                     "--storage", str(storage)]) == 0
        nodes = {n["NodeID"] for n in ray.nodes()}
    finally:
        ray.shutdown()
        cluster.shutdown()
    s = _summary(out)
    assert len(nodes) == 2 and {t["node"]["id"] for t in s["trials"]} == nodes  # ran on both nodes
    assert s["groups"][0]["n"] == 4 and [t["status"] for t in s["trials"]] == ["finished"] * 4
    for t in s["trials"]:
        run_dir = _run_dir(t)
        assert run_dir.parent == storage / "sweep" / t["key"] and read_metrics(run_dir)
        assert "run directory:" in (run_dir.parent / "trial.log").read_text()  # the trial's output, kept
        reported = [json.loads(line) for line in (run_dir.parent / "result.json").read_text().splitlines()]
        assert [r["node_id"] for r in reported] == [t["node"]["id"]]
    assert "## Run directories (node: path)" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_a_grown_grid_runs_only_its_new_trials_and_summarises_all(tmp_path, capsys):
    out = tmp_path / "sweep"
    base = [*TINY, "--algo", "bc", "--seeds_per_trial", "1", "--out", str(out)]
    assert main([*base, "--seeds", "1-2", "--grid", "size=32"]) == 0
    first = {t["key"]: _run_dir(t) for t in _summary(out)["trials"]}
    stamps = {k: (d / "metrics.jsonl").stat().st_mtime_ns for k, d in first.items()}
    capsys.readouterr()

    assert main([*base, "--seeds", "1-3", "--grid", "size=32,64"]) == 0  # one more seed, one more setting
    assert "2 completed trial(s) kept, 4 to run" in capsys.readouterr().out
    s = _summary(out)
    assert [g["n"] for g in s["groups"]] == [3, 3] and len(s["trials"]) == 6
    for key, run_dir in first.items():  # the finished trials did not run again
        assert list((out / "runs" / key).glob("q1_*")) == [run_dir]
        assert (run_dir / "metrics.jsonl").stat().st_mtime_ns == stamps[key]
    done = [json.loads(line)["key"] for line in (out / "trials.jsonl").read_text().splitlines()]
    assert sorted(done) == sorted(t["key"] for t in s["trials"])  # each trial ran once
    # A grid that drops a finished trial is another sweep.
    assert main([*base, "--seeds", "1-3", "--grid", "size=64"]) == 2
    assert "holds a different sweep" in _error_line(capsys)


def _signal_sweep(argv: list[str], out: Path, sig: int) -> tuple[int, str, list[str]]:
    """Start scripts/sweep.py, send `sig` once a trial runs, and return its exit code, output and what is left
    of the processes it had started a few seconds later."""
    import subprocess
    import time

    import psutil

    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "sweep.py"), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not list(out.glob("runs/*/q2_*/metrics.jsonl")) and time.time() < deadline:
        time.sleep(0.2)
    started = psutil.Process(proc.pid).children(recursive=True)
    assert {"raylet", "gcs_server"} <= {p.name() for p in started}
    proc.send_signal(sig)
    text = proc.communicate(timeout=120)[0]
    deadline = time.time() + 20
    while (left := [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]) and time.time() < deadline:
        time.sleep(0.5)
    return proc.returncode, text, [p.name() for p in left]


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGKILL"])
def test_a_stopped_sweep_leaves_no_ray_process_behind(tmp_path, signame):
    """SIGTERM: Tune stops the trials, the summary says what finished, exit 143 with how to resume; SIGKILL: the
    watchdog kills Ray's processes (its dashboard and runtime-env agents outlive a killed driver otherwise)."""
    import signal

    out = tmp_path / "sweep"
    argv = [*TINY, "--algo", "dagger", "-n", "40", "--seeds", "1-3", "--seeds_per_trial", "1", "--out", str(out)]
    code, text, left = _signal_sweep(argv, out, getattr(signal, signame))
    assert left == []
    if signame == "SIGTERM":
        assert code == 143, text[-3000:]
        assert f"stopped by SIGTERM: run the same command again to finish the sweep in {out}" in text
        assert "Traceback" not in text and "unfinished" in (out / "summary.md").read_text()
    else:
        assert code == -signal.SIGKILL
