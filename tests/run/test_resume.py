"""--resume: a run interrupted part-way and resumed reaches the same metrics as an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny_runs import cartpole_cfg, cartpole_expert, expert_data, metrics_without_time, run_logged, stored

import bcjax.run.driver
from bcjax.errors import BcjaxError
from bcjax.run.checkpoint import RESUME_DIR, checkpoint_steps, resume_config
from bcjax.run.config import given_flags
from bcjax.run.logger import read_metrics

REPO = Path(__file__).resolve().parents[2]


class Crash(Exception):
    pass


def _crash_at(monkeypatch, itr: int) -> None:
    """Die as a kill would: after iteration `itr` is logged, before its checkpoint is written."""
    real = bcjax.run.driver.save_policy

    def save_policy(run_dir, i, states, meta):
        if i == itr:
            raise Crash(f"killed before checkpointing iteration {i}")
        real(run_dir, i, states, meta)

    monkeypatch.setattr(bcjax.run.driver, "save_policy", save_policy)


def _resume(run_dir: Path, paths) -> tuple[Path, object]:
    """What scripts/train.py --resume RUN_DIR does, in process."""
    cfg = resume_config(run_dir, given_flags(["--resume", str(run_dir)]))
    assert cfg.resume_step == checkpoint_steps(run_dir / RESUME_DIR)[-1]
    return run_logged(cfg, cartpole_expert, paths)


@pytest.mark.parametrize("num_envs, normalize_obs", [(1, False), (1, True), pytest.param(2, False, marks=pytest.mark.slow)])
def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch, num_envs, normalize_obs):
    paths = expert_data("CartPole-v1", cartpole_expert, n=1, ep_len=120)
    cfg = cartpole_cfg(tmp_path, n_iter=4, num_seeds=2, num_envs=num_envs, vector_mode="sync", save_params=True,
                       normalize_obs=normalize_obs)
    full_dir, full = run_logged(cfg.replace(logdir=str(tmp_path / "full")), cartpole_expert, paths)

    with monkeypatch.context() as m:
        _crash_at(m, 2)
        cut_cfg = cfg.replace(logdir=str(tmp_path / "cut"))
        with pytest.raises(Crash):
            run_logged(cut_cfg, cartpole_expert, paths)
    cut_dir = next((tmp_path / "cut").iterdir())
    assert checkpoint_steps(cut_dir / RESUME_DIR) == [0, 1]
    assert [r["Iteration"] for r in read_metrics(cut_dir)] == [0, 1, 2]  # logged, never checkpointed

    _, resumed = _resume(cut_dir, paths)
    assert [r["Iteration"] for r in read_metrics(cut_dir)] == [0, 1, 2, 3]
    assert metrics_without_time(cut_dir) == metrics_without_time(full_dir)
    for a, b in zip(jax.tree.leaves(full.states.params), jax.tree.leaves(resumed.states.params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(full.buffer.size, resumed.buffer.size) and np.array_equal(full.buffer.pos, resumed.buffer.pos)
    for name in ("observation", "action"):  # every row, stored or not
        assert np.array_equal(full.buffer.data[name], resumed.buffer.data[name])
    assert all(len(stored(full, k)["action"]) == int(full.buffer.size[k]) for k in range(2))
    # TimeSinceStart goes on from the interrupted run's clock instead of restarting at 0
    times = [r["TimeSinceStart"] for r in read_metrics(cut_dir)]
    assert times == sorted(times)


def test_resume_refuses_what_it_cannot_continue(tmp_path, cartpole_run, tiny_run):
    no_save_dir, _ = cartpole_run  # the session's runs: one without --save_params, one finished with it
    with pytest.raises(BcjaxError, match="without --save_params"):
        resume_config(no_save_dir, {"resume": str(no_save_dir)})
    done_dir = tiny_run.run_dir
    with pytest.raises(BcjaxError, match="already finished"):
        resume_config(done_dir, {"resume": str(done_dir)})
    with pytest.raises(BcjaxError, match="drop --batch_size"):
        resume_config(done_dir, given_flags(["--resume", str(done_dir), "--batch_size", "5", "--quiet"]))
    with pytest.raises(BcjaxError, match="not a bcjax run directory"):
        resume_config(tmp_path, {"resume": str(tmp_path)})


def test_cli_resume_errors_are_one_line(tmp_path, capsys):
    from bcjax.run.main import main

    assert main(["--resume", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def _train_cmd(logdir: Path, files) -> list[str]:
    expert_file, data_file = files
    return [sys.executable, str(REPO / "scripts" / "train.py"), "--algo", "dagger", "-env", "Hopper-v4",
            "-epf", str(expert_file), "-ed", str(data_file), "-n", "4", "--num_agent_train_steps_per_iter", "200",
            "--batch_size", "400", "--eval_batch_size", "400", "--video_log_freq", "-1", "--save_params",
            "--logdir", str(logdir), "--quiet"]


@pytest.mark.slow
def test_cli_run_killed_and_resumed_matches_uninterrupted(tmp_path, hopper_files):
    """SIGKILL scripts/train.py once iteration 1 is checkpointed, --resume it, compare with a full run."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(_train_cmd(tmp_path / "full", hopper_files), check=True, env=env, capture_output=True)
    full_dir = next((tmp_path / "full").iterdir())

    proc = subprocess.Popen(_train_cmd(tmp_path / "cut", hopper_files), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            dirs = list((tmp_path / "cut").glob("*/resume/1"))
            if dirs and (dirs[0] / "commit_success.txt").exists():
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    cut_dir = next((tmp_path / "cut").iterdir())
    saved = checkpoint_steps(cut_dir / RESUME_DIR)
    assert saved and saved[-1] < 3, "the run finished before it could be killed"
    last = saved[-1]

    out = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "--resume", str(cut_dir), "--quiet"],
                         check=False, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"resuming {cut_dir} after iteration {last}" in out.stdout
    assert metrics_without_time(cut_dir) == metrics_without_time(full_dir)
