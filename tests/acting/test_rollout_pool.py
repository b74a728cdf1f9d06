"""The rollout worker pool: same metrics as in-process rollouts, JAX-free workers, dead workers fail fast."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bcjax.acting.pool import RolloutPool, RolloutTask, WorkerDied
from bcjax.core.mlp import MLPSpec
from bcjax.errors import BcjaxError
from bcjax.run.driver import wait_all
from tests.tiny_runs import expert_data, hopper_cfg, hopper_expert, metrics_without_time, run_logged

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # every test here starts worker or train.py processes


def _task(env_name: str = "Hopper-v4", seed: int = 3, rng: bool = True) -> RolloutTask:
    r = np.random.default_rng(0)
    params = {"params": {"hidden_0": {"kernel": r.normal(size=(11, 8)).astype(np.float32), "bias": np.zeros(8, np.float32)},
                         "out": {"kernel": r.normal(size=(8, 3)).astype(np.float32), "bias": np.zeros(3, np.float32)},
                         "log_std": np.zeros(3, np.float32)}}
    state = np.random.default_rng(5).bit_generator.state if rng else None
    return RolloutTask("collect", 0, env_name, 1, "sync", MLPSpec((8,), 3), params, seed, state, 50, 20)


@pytest.mark.slow
@pytest.mark.parametrize("num_envs", [1, 2])
def test_metrics_identical_for_0_1_2_workers(tmp_path, num_envs):
    paths = expert_data("Hopper-v4", hopper_expert, ep_len=30)
    got = []
    for workers in (0, 1, 2):
        cfg = hopper_cfg(tmp_path / str(workers), n_iter=3, num_seeds=3, num_envs=num_envs, rollout_workers=workers)
        run_dir, _ = run_logged(cfg, hopper_expert, paths)
        got.append(metrics_without_time(run_dir))
    assert len(got[0]) == 3 and "Eval_AverageReturn" in got[0][0]
    assert all(g == got[0] for g in got)


def test_pool_result_equals_in_process_and_continues_the_noise_stream():
    task = _task()
    with RolloutPool(0) as here, RolloutPool(1) as pool:
        a, b = here.submit(task).result(), pool.submit(task).result()
    assert a.steps == b.steps >= 50
    for pa, pb in zip(a.paths, b.paths, strict=True):
        np.testing.assert_array_equal(pa["observation"], pb["observation"])
        np.testing.assert_array_equal(pa["action"], pb["action"])
    assert a.rng_state == b.rng_state != task.rng_state  # the noise was drawn, and the state came back


def test_worker_modules_do_not_import_jax():
    code = ("import sys, bcjax.acting.pool, bcjax.acting.rollout, bcjax.acting.envs; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_killed_worker_fails_the_task_fast_with_its_seed():
    pool = RolloutPool(1)
    try:
        pool.submit(_task()).result(timeout=60)  # started and working
        os.kill(pool._procs[0].pid, 9)
        t = time.time()
        with pytest.raises(BcjaxError, match="collect of seed index 0 .*env seed 7.*died"):
            wait_all([pool.submit(_task(seed=7))], lambda n: None, 0)
        assert time.time() - t < 10
        with pytest.raises(WorkerDied):  # the pool stays broken
            pool.submit(_task()).result(timeout=10)
    finally:
        t = time.time()
        pool.close()
        assert time.time() - t < 5


def test_env_that_raises_is_a_one_line_error_naming_the_task():
    with RolloutPool(1) as pool:
        with pytest.raises(BcjaxError, match="collect of seed index 0 \\(NoSuchEnv-v0.*unknown environment id"):
            wait_all([pool.submit(_task(env_name="NoSuchEnv-v0"))], lambda n: None, 0)


def _workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"bcjax.acting.pool" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _start_run(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A long DAgger run of the bundled Hopper expert with one rollout worker, once its first row is logged."""
    cmd = [sys.executable, str(REPO / "scripts" / "train.py"), "--algo", "dagger", "--env_name", "Hopper-v4",
           "-n", "200", "--batch_size", "2000", "--eval_batch_size", "2000", "--num_agent_train_steps_per_iter", "20",
           "--video_log_freq", "-1", "--rollout_workers", "1", "--logdir", str(tmp_path), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        rows = list(tmp_path.glob("q2_*/metrics.jsonl"))
        if rows and rows[0].read_text().count("\n") >= 2:
            return proc, rows[0].parent
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"the run logged nothing: {proc.communicate()[1][-2000:]}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc (Linux)")
def test_worker_killed_mid_run_stops_it_with_one_line_naming_task_and_seed(tmp_path):
    proc, run_dir = _start_run(tmp_path)
    (worker,) = _workers_of(proc.pid)
    logged = (run_dir / "metrics.jsonl").read_text()
    os.kill(worker, 9)
    t = time.time()
    _, err = proc.communicate(timeout=60)
    assert time.time() - t < 15  # stops within seconds, no hang
    assert proc.returncode == 2
    last = err.strip().splitlines()[-1]
    assert re.match(r"error: (collect|eval) of seed index 0 \(Hopper-v4, env seed \d+\) failed: the rollout worker "
                    r"died \(killed by SIGKILL\)", last), err[-2000:]
    assert (run_dir / "metrics.jsonl").read_text().startswith(logged)  # what was logged stays


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc (Linux)")
def test_ctrl_c_stops_the_run_and_its_workers(tmp_path):
    proc, _ = _start_run(tmp_path)
    (worker,) = _workers_of(proc.pid)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert not Path(f"/proc/{worker}").exists() or b"Z" in Path(f"/proc/{worker}/stat").read_bytes().split()[2:3]
