"""The rollout worker pool: same metrics as in-process rollouts, JAX-free workers, dead workers fail fast."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from bcjax.errors import BcjaxError
from bcjax.numpy_policy import PolicySpec
from bcjax.rollout_pool import RolloutPool, RolloutTask, WorkerDied
from bcjax.train_loop import wait_all
from tests.tiny_runs import expert_data, hopper_cfg, hopper_expert, metrics_without_time, run_logged


def _task(env_name: str = "Hopper-v4", seed: int = 3, rng: bool = True) -> RolloutTask:
    r = np.random.default_rng(0)
    params = {"params": {"hidden_0": {"kernel": r.normal(size=(11, 8)).astype(np.float32), "bias": np.zeros(8, np.float32)},
                         "out": {"kernel": r.normal(size=(8, 3)).astype(np.float32), "bias": np.zeros(3, np.float32)},
                         "log_std": np.zeros(3, np.float32)}}
    state = np.random.default_rng(5).bit_generator.state if rng else None
    return RolloutTask("collect", 0, env_name, 1, "sync", PolicySpec(1, "tanh", False), params, seed, state, 50, 20)


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
    code = ("import sys, bcjax.rollout_pool, bcjax.rollout, bcjax.envs; "
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
