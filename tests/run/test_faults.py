"""Faults without tracebacks or silent damage (docs/RELIABILITY.md lists each case and its test here).

Untrusted pickles that would exhaust memory, a run directory shared or torn,
corrupt checkpoints, full disks and read-only paths, stop signals, and flags
that used to end in tracebacks: each is a one-line BcjaxError (or exit code)
checked against what the fault really does.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import cs285_file, make_expert_dict, write_pickle

from bcjax.data.expert import expert_params_from_dict, load_expert
from bcjax.data.expert_data import load_expert_data
from bcjax.data.files import append_line, check_writable_dir, write_atomic
from bcjax.data.safe_pickle import memory_budget
from bcjax.errors import BcjaxError
from bcjax.run.checkpoint import (
    CHECKSUM_FILE,
    RESUME_DIR,
    checkpoint_steps,
    read_run_config,
    restore_checkpoint,
    resume_config,
    save_checkpoint,
    step_problem,
)
from bcjax.run.config import Config, config_dict
from bcjax.run.logger import RunLogger, read_metrics, run_lock, truncate_metrics

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _traj(n: int = 100, obs_dim: int = 11, act_dim: int = 3) -> dict:
    rng = np.random.default_rng(0)
    return {"observation": rng.normal(size=(n, obs_dim)).astype(np.float32),
            "action": rng.normal(size=(n, act_dim)).astype(np.float32), "reward": np.ones(n, np.float32),
            "next_observation": rng.normal(size=(n, obs_dim)).astype(np.float32), "terminal": np.zeros(n, np.float32)}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# ---------------------------------------------------------------- untrusted input: memory

def _refused_peak(path: Path, match: str) -> int:
    """The peak Python allocation while load_expert_data refuses `path` with a BcjaxError matching `match`."""
    tracemalloc.start()
    try:
        with pytest.raises(BcjaxError, match=match):
            load_expert_data(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memo_amplified_expert_data_is_refused_before_it_is_concatenated(tmp_path):
    # 5000 memo references to one 40 KB trajectory: a small file, 200 MB once concatenated.
    path = write_pickle(tmp_path / "amplified.pkl", [_traj()] * 5000)
    assert path.stat().st_size < 300_000
    peak = _refused_peak(path, "decodes to far more memory than its")
    assert peak < memory_budget(path.stat().st_size) + 2 * path.stat().st_size
    # the same trajectory stored a few times is ordinary data
    assert len(load_expert_data(write_pickle(tmp_path / "ok.pkl", [_traj()] * 3))) == 3


@pytest.mark.parametrize("stream", [
    b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b".",  # BINBYTES8 declaring 1 TiB
    b"\x80\x04\x8d" + (2**62).to_bytes(8, "little") + b".",  # BINUNICODE8 declaring 4 EiB
    b"\x80\x04\x95" + (2**50).to_bytes(8, "little") + b"N.",  # a FRAME past the end of the file
    b"\x80\x04r\xff\xff\xff\xffN.",  # LONG_BINPUT 2^32-1: a 32 GiB memo table
    # numpy's own constructors asked for a 2 GiB array
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\x00\x00\x10\x85cnumpy\ndtype\n"
    b"X\x02\x00\x00\x00f8\x85R\x87R.",
    b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x10\x85R.",  # ndarray((2^28,)) called directly
])
def test_declared_huge_sizes_are_refused_before_allocation(tmp_path, stream):
    path = tmp_path / "tiny.pkl"
    path.write_bytes(stream)
    assert _refused_peak(path, "expert data file .* (is not a readable pickle|was refused)") < 1 << 20


def test_impossible_network_size_is_refused_with_the_memory_it_needs():
    from bcjax.acting.envs import env_info, make_env
    from bcjax.run.driver import check_run_fits_memory, run_memory_bytes

    env = make_env("Hopper-v4")
    info = env_info(env)
    env.close()
    cfg = Config(env_name="Hopper-v4", size=200_000)
    need = run_memory_bytes(cfg, info, 1000)
    # closed form: 200000^2 weights in the second layer alone, 4 bytes each, 6 copies
    assert need > 200_000**2 * 4 * 6
    with pytest.raises(BcjaxError, match=r"needs at least \d+\.\d GiB .*--size 200000"):
        check_run_fits_memory(cfg, info, 1000)
    check_run_fits_memory(Config(env_name="Hopper-v4"), info, 1000)  # the default run fits


# ---------------------------------------------------------------- untrusted input: validation

def test_expert_whose_later_layers_do_not_chain_is_refused():
    d = make_expert_dict(11, 3, hidden=(64, 64))
    layers = d["GaussianPolicy"]["hidden"]["FeedforwardNet"]
    layers["layer_2"]["AffineLayer"]["W"] = np.zeros((32, 64))  # takes 32, the first layer gives 64
    with pytest.raises(BcjaxError, match="do not chain .*hidden layer_2 takes 32 inputs, gets 64"):
        expert_params_from_dict(d, "expert")


@pytest.mark.parametrize("field", ["mean_1_D", "meansq_1_D"])
def test_expert_with_nan_normaliser_is_refused(field):
    d = make_expert_dict(11, 3)
    d["GaussianPolicy"]["obsnorm"]["Standardizer"][field][0, 4] = np.nan
    with pytest.raises(BcjaxError, match=f"{field} contains NaN"):
        expert_params_from_dict(d, "expert")


@pytest.mark.parametrize("change,message", [
    (lambda t: t.update(reward=np.ones(())), "'reward' should have 1 dimensions, got shape ()"),
    (lambda t: t.update(observation=np.zeros(())), "'observation' should have 2 dimensions"),
    (lambda t: t.update(action=t["action"].astype(np.complex64)), "real-valued numeric .* complex64"),
    (lambda t: t["reward"].__setitem__(3, np.nan), "'reward' contains NaN"),
    (lambda t: t["next_observation"].__setitem__((0, 0), np.inf), "'next_observation' contains NaN or infinite"),
])
def test_malformed_expert_data_is_one_line(tmp_path, change, message):
    traj = _traj()
    change(traj)
    with pytest.raises(BcjaxError, match=message):
        load_expert_data(write_pickle(tmp_path / "d.pkl", [traj]))


def test_non_finite_metrics_are_written_as_valid_json(tmp_path):
    logger = RunLogger(tmp_path, print_fn=lambda s: None)
    logger.log_iteration(0, {"Eval_AverageReturn": [float("nan")], "Training Loss": [float("inf")]})
    logger.close()
    line = (tmp_path / "metrics.jsonl").read_text()

    def refuse(constant):
        raise ValueError(constant)

    row = json.loads(line, parse_constant=refuse)  # NaN / Infinity are not JSON
    assert row["Eval_AverageReturn"] is None and row["per_seed"]["Training Loss"] == [None]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1] == "0,0,,"  # empty cells, as a rebuilt CSV has them


# ---------------------------------------------------------------- flags

def _main(argv: list[str]) -> int:
    from bcjax.run.main import main

    return main(argv)


@pytest.mark.parametrize("argv,message", [
    (["--seed", "-5"], "--seed must be between 0 and 4294967295"),
    (["--seed", str(2**32)], "--seed must be between 0 and 4294967295"),  # would equal --seed 0
    (["--seed", str(2**64)], "--seed must be between 0 and 4294967295"),
    (["-lr", "nan"], "--learning_rate must be positive, got nan"),
    (["-lr", "inf"], "--learning_rate must be positive, got inf"),
    (["--exp_name", "../../x"], "--exp_name '../../x' must be a plain name"),
    (["--exp_name", "a/b"], "must be a plain name"),
    (["--resume_step", "2"], "--resume_step needs --resume"),
])
def test_bad_flags_are_one_line_before_anything_is_written(tmp_path, capsys, argv, message):
    assert _main([*argv, "--logdir", str(tmp_path / "runs")]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "runs").exists()


def test_relative_expert_paths_are_stored_absolute(tmp_path, monkeypatch):
    from bcjax.run.config import parse_config

    monkeypatch.chdir(tmp_path)
    cfg = parse_config(["-epf", "e.pkl", "-ed", "sub/d.pkl"])
    assert cfg.expert_policy_file == str(tmp_path / "e.pkl") and cfg.expert_data == str(tmp_path / "sub" / "d.pkl")


def _run_dir_with_config(tmp_path: Path, **kw) -> Path:
    run_dir = tmp_path / "q2_run"
    run_dir.mkdir(parents=True)
    cfg = Config(algo="dagger", n_iter=5, save_params=True).replace(**kw)
    (run_dir / "config.json").write_text(json.dumps(config_dict(cfg)))
    return run_dir


def _save_resume_step(run_dir: Path, step: int, cfg: Config | None = None) -> None:
    cfg = cfg or read_run_config(run_dir)
    save_checkpoint(run_dir / RESUME_DIR, step, {"x": np.arange(1000, dtype=np.float32) + step},
                    {"config": config_dict(cfg), "iteration": step, "elapsed": 0.0}, max_to_keep=2)


def test_resume_with_n_iter_names_the_resume_rule_not_bc(tmp_path, capsys):
    run_dir = _run_dir_with_config(tmp_path)
    assert _main(["--resume", str(run_dir), "--n_iter", "20"]) == 2
    err = _one_line_error(capsys)
    assert "drop --n_iter" in err and "BC runs exactly one iteration" not in err


def test_resume_accepts_moved_expert_files(tmp_path):
    run_dir = _run_dir_with_config(tmp_path, expert_policy_file="/gone/e.pkl")
    _save_resume_step(run_dir, 0)
    cfg = resume_config(run_dir, {"resume": str(run_dir), "expert_policy_file": "moved/e.pkl"})
    assert cfg.expert_policy_file == os.path.abspath("moved/e.pkl") and cfg.resume_step == 0


# ---------------------------------------------------------------- run directory integrity

_HOLD_LOCK = ("import sys, time; from bcjax.run.logger import run_lock\n"
              "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")


@pytest.mark.slow
def test_one_writer_per_run_directory_and_stale_locks_are_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BcjaxError, match=f"in use by process {holder.pid} "), run_lock(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()
    # the holder died (as a SIGKILLed run does): its lock file stays, naming a dead pid, and is taken over
    assert (tmp_path / "lock").read_text().strip() == str(holder.pid)
    with run_lock(tmp_path):
        assert (tmp_path / "lock").read_text().strip() == str(os.getpid())


def test_two_resumes_of_one_run_cannot_both_write(tmp_path, capsys, hopper_files):
    expert_file, data_file = hopper_files
    run_dir = _run_dir_with_config(tmp_path, env_name="Hopper-v4", expert_policy_file=str(expert_file),
                                   expert_data=str(data_file), video_log_freq=-1)
    _save_resume_step(run_dir, 0)
    with run_lock(run_dir):  # the first resume, still running
        assert _main(["--resume", str(run_dir)]) == 2
    assert f"in use by process {os.getpid()}" in _one_line_error(capsys)


def test_torn_metrics_lines_are_dropped_on_resume_and_by_readers(tmp_path):
    logger = RunLogger(tmp_path, print_fn=lambda s: None)
    for i in range(3):
        logger.log_iteration(i, {"x": [float(i), i + 0.5]})
    logger.close()
    jsonl, table = tmp_path / "metrics.jsonl", tmp_path / "metrics.csv"
    rows = read_metrics(tmp_path)
    assert [r["Iteration"] for r in rows] == [0, 1, 2] and rows[1]["per_seed"] == {"x": [1.0, 1.5]}
    with jsonl.open("a") as f:
        f.write('{"Iteration": 3, "x": 1')  # what a kill during the appends leaves
    with table.open("a") as f:
        f.write("3,0")
    assert read_metrics(tmp_path) == rows  # what plotting reads
    truncate_metrics(tmp_path, 1)
    assert read_metrics(tmp_path) == rows[:2] and jsonl.read_text().endswith("\n")
    assert table.read_bytes() == b"Iteration,seed_index,x\r\n0,0,0.0\r\n0,1,0.5\r\n1,0,1.0\r\n1,1,1.5\r\n"
    truncate_metrics(tmp_path, -1)  # nothing kept: the next row writes the header again
    RunLogger(tmp_path, print_fn=lambda s: None).log_iteration(0, {"x": [2.0]})
    assert table.read_bytes() == b"Iteration,seed_index,x\r\n0,0,2.0\r\n"
    # damage in the middle is not what a kill leaves: say so instead of guessing
    jsonl.write_text(json.dumps(rows[0]) + "\nGARBAGE\n" + json.dumps(rows[1]) + "\n")
    with pytest.raises(BcjaxError, match="line 2 is damaged"):
        read_metrics(tmp_path)


def test_torn_config_is_recovered_from_the_checkpoint(tmp_path):
    run_dir = _run_dir_with_config(tmp_path, exp_name="torn", n_iter=7)
    _save_resume_step(run_dir, 0)
    (run_dir / "config.json").write_text('{"algo": "dagger", "n_it')
    cfg = read_run_config(run_dir)
    assert (cfg.exp_name, cfg.n_iter) == ("torn", 7)
    for p in (run_dir / RESUME_DIR).iterdir():
        import shutil
        shutil.rmtree(p)
    with pytest.raises(BcjaxError, match="config.json is damaged"):
        read_run_config(run_dir)


@pytest.mark.slow
def test_expert_data_cache_writers_never_share_a_temporary_file(tmp_path):
    # Several processes write the same cache file at once, as same-seed runs without -ed do.
    target = tmp_path / "expert_data" / "cache.pkl"
    code = ("import sys, numpy as np; from bcjax.data.expert_data import save_expert_data\n"
            "t = {k: np.ones((50, 11 if 'obs' in k else 3), np.float32) for k in ('observation', 'next_observation', 'action')}\n"
            "t.update(reward=np.ones(50, np.float32), terminal=np.zeros(50, np.float32))\n"
            "[save_expert_data([t], sys.argv[1]) for _ in range(30)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target)], env=ENV, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    errs = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    assert len(load_expert_data(target)) == 1
    assert [p.name for p in target.parent.iterdir()] == ["cache.pkl"]  # no temporary left behind


# ---------------------------------------------------------------- checkpoints

def _flip_a_byte(step_dir: Path) -> Path:
    victim = max((p for p in step_dir.rglob("*") if p.is_file() and p.name != CHECKSUM_FILE), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))
    return victim


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_checkpoint_step_is_refused_by_name_and_another_is_offered(tmp_path, damage):
    for step in range(3):
        save_checkpoint(tmp_path, step, {"x": np.arange(5000, dtype=np.float32) * step}, {"step": step})
    victim = _flip_a_byte(tmp_path / "2") if damage == "flip" else None
    if damage == "truncate":
        victim = max((p for p in (tmp_path / "2").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        victim.write_bytes(victim.read_bytes()[:100])
    assert step_problem(tmp_path, 2) is not None and step_problem(tmp_path, 1) is None
    template = {"x": np.zeros(5000, np.float32)}
    with pytest.raises(BcjaxError, match=r"checkpoint step 2 in .* is corrupt .*pick an intact one with --step 1"):
        restore_checkpoint(tmp_path, template)
    out, meta = restore_checkpoint(tmp_path, template, step=1)  # what --step 1 does
    assert np.array_equal(out["x"], np.arange(5000, dtype=np.float32)) and meta == {"step": 1}


def test_bit_flipped_resume_buffer_is_refused_not_blamed_on_the_learning_rate(tmp_path, capsys):
    run_dir = _run_dir_with_config(tmp_path)
    _save_resume_step(run_dir, 0)
    _save_resume_step(run_dir, 1)
    _flip_a_byte(run_dir / RESUME_DIR / "1")
    assert _main(["--resume", str(run_dir)]) == 2
    err = _one_line_error(capsys)
    assert "resume state of iteration 1" in err and "corrupt" in err and "--resume_step 0" in err
    assert resume_config(run_dir, {"resume": str(run_dir), "resume_step": 0}).resume_step == 0


def test_evaluate_refuses_a_corrupt_policy_checkpoint_in_one_line(tmp_path, capsys, tiny_run):
    import shutil

    from bcjax.run.evaluate import main as evaluate_main

    run_dir = tmp_path / tiny_run.run_dir.name  # a copy of the session's run (--save_params, iterations 0 and 1)
    shutil.copytree(tiny_run.run_dir, run_dir)
    _flip_a_byte(run_dir / "checkpoints" / "1")
    assert evaluate_main([str(run_dir), "--episodes", "1"]) == 2
    assert "checkpoint step 1" in _one_line_error(capsys)
    assert evaluate_main([str(run_dir), "--episodes", "1", "--step", "0"]) == 0


def test_interrupted_first_save_is_described_as_such(tmp_path):
    run_dir = _run_dir_with_config(tmp_path)
    (run_dir / RESUME_DIR / "0.orbax-checkpoint-tmp-1712345678").mkdir(parents=True)  # what a kill mid-save leaves
    with pytest.raises(BcjaxError, match="stopped before or during its first save"):
        resume_config(run_dir, {"resume": str(run_dir)})
    no_save = _run_dir_with_config(tmp_path / "b", save_params=False)
    with pytest.raises(BcjaxError, match="without --save_params"):
        resume_config(no_save, {"resume": str(no_save)})


# ---------------------------------------------------------------- write failures

@contextlib.contextmanager
def _mounted(tmp_path: Path, *opts: str, source: str = "tmpfs", fstype: str | None = "tmpfs"):
    """A small file system of our own (skips where mounting is not permitted)."""
    point = tmp_path / f"mnt{len(list(tmp_path.iterdir()))}"
    point.mkdir()
    cmd = ["mount", *(["-t", fstype] if fstype else []), *opts, source, str(point)]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.skip(f"cannot mount ({' '.join(cmd)}): needs root")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last_one(tmp_path):
    with _mounted(tmp_path, "-o", "size=2m") as disk:
        small = {"x": np.arange(1000, dtype=np.float32)}
        save_checkpoint(disk / "ckpt", 0, small, {"step": 0})
        big = {"x": np.random.default_rng(0).normal(size=3_000_000).astype(np.float32)}  # 12 MB, incompressible
        with pytest.raises(BcjaxError, match=r"cannot write checkpoint step 1 in .*no space left on device; "
                                             r"the last complete checkpoint is step 0"):
            save_checkpoint(disk / "ckpt", 1, big, {"step": 1})
        assert checkpoint_steps(disk / "ckpt") == [0]
        assert not [p for p in (disk / "ckpt").iterdir() if "tmp" in p.name]  # no stale temporary folders
        out, _ = restore_checkpoint(disk / "ckpt", {"x": np.zeros(1000, np.float32)})
        assert np.array_equal(out["x"], small["x"])
        # the other writers, on a disk now filled up: atomic files and metrics appends
        with contextlib.suppress(OSError):
            (disk / "fill").write_bytes(b"\0" * 4_000_000)
        with pytest.raises(BcjaxError, match="cannot write .*: No space left on device; free space"):
            write_atomic(disk / "config.json", "x" * 100_000)
        with pytest.raises(BcjaxError, match="cannot write .*metrics.jsonl: No space left on device"):
            append_line(disk / "metrics.jsonl", "x" * 100_000)


# Writes a 10 MB tree of 25 arrays as step 0 under a 1 MB file-size limit (RLIMIT_FSIZE: a full disk that needs
# no mount), so orbax's writes fail while others are still in flight.
_LIMITED_SAVE = """
import resource, signal, sys
import numpy as np
from bcjax.errors import BcjaxError
from bcjax.run.checkpoint import save_checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails (EFBIG) instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
rng = np.random.default_rng(0)
try:
    save_checkpoint(sys.argv[1], 0, {f"a{i}": rng.normal(size=100_000 + 997 * i).astype(np.float32) for i in range(25)}, {})
except BcjaxError as e:
    print(f"error: {e}", file=sys.stderr)
"""


@pytest.mark.slow
def test_a_failed_save_shows_only_its_one_line_not_orbax_tracebacks(tmp_path):
    """orbax's writes left on its closed event loop printed 'Event loop is closed' and 'Task exception was never
    retrieved' tracebacks (20-50) around the one line."""
    proc = subprocess.run([sys.executable, "-c", _LIMITED_SAVE, str(tmp_path / "ckpt")], env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    assert proc.stderr.startswith("error: cannot write checkpoint step 0 in ") and "File too large; no earlier" in proc.stderr


def test_a_failed_thread_start_is_named_not_blamed_on_the_disk(tmp_path, capsys, monkeypatch, hopper_files):
    import threading

    save_checkpoint(tmp_path / "ckpt", 0, {"x": np.arange(3.0)}, {})

    def no_thread(self):
        raise RuntimeError("can't start new thread")  # what CPython raises at a pids or thread limit

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    with pytest.raises(BcjaxError, match=r"cannot save checkpoint step 1 in .*: no new thread could be started \(can't "
                                         r"start new thread\); the last complete checkpoint is step 0: raise") as e:
        save_checkpoint(tmp_path / "ckpt", 1, {"x": np.arange(3.0)}, {})
    assert "free space" not in str(e.value)
    del e  # (its context holds orbax's coroutines that no thread ran: collected below, with their warning)
    # anywhere else in a run (here TensorBoard's writer thread): one line, and no run directory is left behind
    expert_file, data_file = hopper_files
    assert _main(["-env", "Hopper-v4", "-epf", str(expert_file), "-ed", str(data_file), "--logdir", str(tmp_path / "runs"),
                  "--video_log_freq", "-1", "--rollout_workers", "0", "--allow_weak_expert"]) == 2
    assert "no new thread could be started (can't start new thread): raise" in _one_line_error(capsys)
    assert list((tmp_path / "runs").iterdir()) == []
    gc.collect()
    monkeypatch.undo()
    out, _ = restore_checkpoint(tmp_path / "ckpt", {"x": np.zeros(3)})  # orbax still works once threads start again
    assert np.array_equal(out["x"], np.arange(3.0))


def test_unwritable_logdir_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(BcjaxError, match="--logdir .*file is a file, not a directory"):
        check_writable_dir(tmp_path / "file", "--logdir")
    with pytest.raises(BcjaxError, match="cannot write .*Not a directory"):
        check_writable_dir(tmp_path / "file" / "below", "--logdir")
    (tmp_path / "ro_src").mkdir()
    with _mounted(tmp_path, "--bind", "-o", "ro", source=str(tmp_path / "ro_src"), fstype=None) as ro:
        with pytest.raises(BcjaxError, match="Read-only file system; that file system is read-only"):
            check_writable_dir(ro / "runs", "--logdir")


def test_sweep_out_on_a_read_only_disk_is_one_line_before_ray_starts(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    import bcjax.sweeps.runner
    from bcjax.sweeps.sweep import main as sweep_main

    def no_ray(*a, **k):
        raise AssertionError("Ray started")

    monkeypatch.setattr(bcjax.sweeps.runner, "start_ray", no_ray)
    (tmp_path / "ro_src").mkdir()
    with _mounted(tmp_path, "--bind", "-o", "ro", source=str(tmp_path / "ro_src"), fstype=None) as ro:
        assert sweep_main(["--env_name", "Hopper-v4", "--seeds", "1-2", "--out", str(ro / "sweep")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and "read-only" in err, err


def test_errors_after_the_run_directory_exists_leave_no_empty_one(tmp_path, capsys, monkeypatch, hopper_files):
    import bcjax.run.driver

    def fail(*a, **k):
        raise BcjaxError("simulated failure before the first iteration")

    monkeypatch.setattr(bcjax.run.driver, "iterate", fail)
    expert_file, data_file = hopper_files
    assert _main(["-env", "Hopper-v4", "-epf", str(expert_file), "-ed", str(data_file), "--logdir",
                  str(tmp_path / "runs"), "--video_log_freq", "-1", "--rollout_workers", "0"]) == 2
    assert "simulated failure" in _one_line_error(capsys)
    assert list((tmp_path / "runs").iterdir()) == []


# ---------------------------------------------------------------- signals

def test_sigterm_finishes_the_iteration_saves_and_stops(tmp_path, monkeypatch):
    from tiny_runs import cartpole_cfg, cartpole_expert, expert_data, run_logged

    import bcjax.run.driver
    from bcjax.run.signals import Stopped, stop_on_signals

    real = bcjax.run.driver.save_policy

    def save_policy(run_dir, itr, states, meta):
        if itr == 1:  # the signal lands during the save: the save still completes
            os.kill(os.getpid(), signal.SIGTERM)
        real(run_dir, itr, states, meta)

    monkeypatch.setattr(bcjax.run.driver, "save_policy", save_policy)
    with stop_on_signals(), pytest.raises(Stopped) as stop:
        run_logged(cartpole_cfg(tmp_path, n_iter=4, save_params=True), cartpole_expert,
                   expert_data("CartPole-v1", cartpole_expert, n=1, ep_len=60))
    assert (stop.value.signum, stop.value.iteration, stop.value.exit_code) == (signal.SIGTERM, 1, 143)
    run_dir = next(tmp_path.glob("q2_*"))
    assert checkpoint_steps(run_dir / RESUME_DIR)[-1] == 1 and [r["Iteration"] for r in read_metrics(run_dir)] == [0, 1]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after the block


def test_a_stopped_run_without_save_params_saves_its_policy(tmp_path, monkeypatch):
    from tiny_runs import cartpole_cfg, cartpole_expert, expert_data, run_logged

    import bcjax.run.driver
    from bcjax.run.checkpoint import POLICY_DIR, load_policy
    from bcjax.run.signals import Stopped, stop_on_signals

    real = bcjax.run.driver.collect

    def collect(run, itr, *args):
        if itr == 2:  # during iteration 2 of 6: the run stops after it
            os.kill(os.getpid(), signal.SIGTERM)
        return real(run, itr, *args)

    monkeypatch.setattr(bcjax.run.driver, "collect", collect)
    with stop_on_signals(), pytest.raises(Stopped) as stop:
        run_logged(cartpole_cfg(tmp_path, n_iter=6), cartpole_expert,
                   expert_data("CartPole-v1", cartpole_expert, n=1, ep_len=60))
    assert stop.value.iteration == 2
    run_dir = next(tmp_path.glob("q2_*"))
    assert checkpoint_steps(run_dir / POLICY_DIR) == [2]  # the policy it stopped with; no resume state
    assert not (run_dir / RESUME_DIR).exists()
    load_policy(run_dir)  # what scripts/evaluate.py reads


@pytest.mark.slow
def test_sigterm_to_the_process_group_finishes_the_iteration(tmp_path):
    """What `timeout`, `kill -- -PGID`, SLURM and Kubernetes send: the whole group gets SIGTERM. The rollout
    threads live in the main process, so the run stops as when only it gets the signal (issue: workers died first)."""
    cmd = [sys.executable, "scripts/train.py", "--algo", "dagger", "--env_name", "Hopper-v4", "--n_iter", "50",
           "--batch_size", "500", "--eval_batch_size", "500", "--ep_len", "100", "--video_log_freq", "-1",
           "--save_params", "--logdir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    for line in proc.stdout:
        if "iteration 1 " in line:
            break
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "resume with: python scripts/train.py --resume" in err and "Traceback" not in err
    run_dir = next(tmp_path.glob("q2_*"))
    assert checkpoint_steps(run_dir / RESUME_DIR), "the stopped run saved its resume state"


_WAIT_FOR_SIGNALS = ("import time; from bcjax.run.signals import stop_on_signals\n"
                     "with stop_on_signals():\n    print('ready', flush=True)\n    time.sleep(30)\n")


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_second_signal_exits_at_once(sig, code):
    proc = subprocess.Popen([sys.executable, "-c", _WAIT_FOR_SIGNALS], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(sig)
    time.sleep(0.3)
    assert proc.poll() is None  # the first one only asks for a stop
    proc.send_signal(sig)
    t = time.time()
    assert proc.wait(timeout=10) == code and time.time() - t < 5
    err = proc.stderr.read()
    assert "stopping after this iteration" in err and "exiting now" in err and "Traceback" not in err


# ---------------------------------------------------------------- GL probe and collect_expert_data

def test_missing_gl_library_is_one_line_for_every_command(tmp_path, monkeypatch, capsys):
    import bcjax.acting.gl

    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.setattr(bcjax.acting.gl, "find_library", lambda name: None)
    with pytest.raises(BcjaxError, match="MUJOCO_GL=osmesa but libOSMesa is not installed"):
        bcjax.acting.gl.check_mujoco_gl_setting()
    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.setattr(bcjax.acting.gl, "find_library", lambda name: "libEGL.so.1")
    bcjax.acting.gl.check_mujoco_gl_setting()


@pytest.mark.slow
@pytest.mark.parametrize("script, args", [("train.py", ["--video_log_freq", "-1", "--logdir", "{tmp}"]),
                                          ("evaluate.py", ["{tmp}/no_run"]),
                                          ("collect_expert_data.py", ["--no_save"]),
                                          ("train_expert.py", ["--total_steps", "10", "--logdir", "{tmp}/te"])])
def test_a_bad_mujoco_gl_is_one_line_before_mujoco_is_imported(tmp_path, script, args):
    """`import mujoco` raises (a traceback) on a MUJOCO_GL it does not know, or whose library is missing: every
    command checks the setting first."""
    out = subprocess.run([sys.executable, str(REPO / "scripts" / script), *(a.format(tmp=tmp_path) for a in args)],
                         env={**ENV, "MUJOCO_GL": "bogus"}, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr == ("error: MUJOCO_GL='bogus' is not a value MuJoCo accepts: use egl or "
                                                  "osmesa (headless), glfw (with a display), or unset it\n"), out.stderr


@pytest.mark.slow
def test_missing_osmesa_real_process(tmp_path):
    import ctypes.util

    if ctypes.util.find_library("OSMesa"):
        pytest.skip("libOSMesa is installed here")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "--video_log_freq", "-1", "--logdir",
                          str(tmp_path)], env={**ENV, "MUJOCO_GL": "osmesa"}, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: MUJOCO_GL=osmesa but libOSMesa"), out.stderr
    assert out.stderr.count("\n") == 1


def _collect(argv: list[str]) -> int:
    from bcjax.experts.collection import main

    return main(argv)


@pytest.mark.parametrize("argv,message", [
    (["--seed", "-1"], "--seed must be between 0"),
    (["--output", "{tmp}"], "is a directory: give a file name"),
    (["--env_name", "Ant-v4", "-epf", "{hopper}"], "the expert gives actions of shape (3,) but Ant-v4 takes (8,)"),
])
def test_collect_expert_data_errors_are_one_line(tmp_path, capsys, argv, message):
    hopper = write_pickle(tmp_path / "hopper.pkl", make_expert_dict(11, 3))
    argv = [a.format(tmp=tmp_path, hopper=hopper) for a in argv]
    assert _collect([*argv, "--n_traj", "1", "--ep_len", "5", "--no_save"] if "--output" not in argv else
                    [*argv, "--n_traj", "1", "--ep_len", "5"]) == 2
    assert message in _one_line_error(capsys)


def test_real_cs285_files_still_load():
    expert = load_expert(cs285_file("experts", "Hopper.pkl"))
    assert (expert.obs_dim, expert.act_dim) == (11, 3)
    paths = load_expert_data(cs285_file("expert_data", "expert_data_Hopper-v4.pkl"))
    assert len(paths) == 2 and paths[0]["observation"].shape[1] == 11
