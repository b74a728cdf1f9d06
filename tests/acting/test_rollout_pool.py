"""Rollouts: a phase's seeds step together in one batch, an evaluation with the next collection; results do not
depend on threads or grouping; failures are one line; nothing outlives the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bcjax.acting.runner import Mixing, Rollouts, RolloutTask, make_rows, run_tasks
from bcjax.core.mlp import MLPSpec
from bcjax.errors import BcjaxError
from bcjax.run.driver import wait_all
from tests.tiny_runs import expert_data, hopper_cfg, hopper_expert, metrics_without_time, run_logged

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # every test here runs whole rollouts or starts train.py processes


def _task(k: int = 0, env_name: str = "Hopper-v5", seed: int = 3, rng: bool = True, kind: str = "collect",
          num_envs: int = 2, steps: int = 80, mix: bool = True) -> RolloutTask:
    r = np.random.default_rng(k)
    params = {"params": {"hidden_0": {"kernel": r.normal(size=(11, 8)).astype(np.float32), "bias": np.zeros(8, np.float32)},
                         "out": {"kernel": r.normal(size=(8, 3)).astype(np.float32), "bias": np.zeros(3, np.float32)},
                         "log_std": np.full(3, -1.0, np.float32)}}
    m = Mixing(lambda obs: np.tanh(obs[:, :3] * 2), 0.3, 50 + k) if mix else None
    return RolloutTask(kind, k, env_name, num_envs, MLPSpec((8,), 3), params, seed + k, 5 + k if rng else None, steps, 25, m)


def _same(a, b) -> None:
    assert (a.steps, a.expert_steps) == (b.steps, b.expert_steps)
    assert len(a.paths) == len(b.paths)
    for pa, pb in zip(a.paths, b.paths):
        for key in ("observation", "action", "reward", "next_observation", "terminal"):
            np.testing.assert_array_equal(pa[key], pb[key])


@pytest.mark.slow
@pytest.mark.parametrize("num_envs", [1, 2])
def test_metrics_identical_for_0_1_2_threads(tmp_path, num_envs):
    paths = expert_data("Hopper-v4", hopper_expert, ep_len=30)
    got = []
    for threads in (0, 1, 2):
        cfg = hopper_cfg(tmp_path / str(threads), n_iter=3, num_seeds=3, num_envs=num_envs, rollout_workers=threads)
        run_dir, _ = run_logged(cfg, hopper_expert, paths)
        got.append(metrics_without_time(run_dir))
    assert len(got[0]) == 3 and "Eval_AverageReturn" in got[0][0]
    assert all(g == got[0] for g in got)


def test_each_seed_depends_only_on_its_task_whatever_the_grouping_threads_and_rows():
    tasks = [_task(k) for k in range(4)]
    together = run_tasks(tasks, make_rows("Hopper-v5", 8, 1))
    alone = [run_tasks([t], make_rows("Hopper-v5", 2, 3))[0] for t in tasks]
    pairs = [r for g in (tasks[:2], tasks[2:]) for r in run_tasks(g, make_rows("Hopper-v5", 4, 2))]
    one_row = [run_tasks([replace(t, num_envs=1)], make_rows("Hopper-v5", 1, 1))[0] for t in tasks]
    for a, b, c, d in zip(together, alone, pairs, one_row):
        _same(a, b)
        _same(a, c)
        _same(a, d)
    assert all(r.steps >= 80 and 0 < r.expert_steps < r.steps for r in together)
    quiet = run_tasks([replace(tasks[0], noise_seed=None)], make_rows("Hopper-v5", 2, 1))[0]
    assert not np.array_equal(quiet.paths[0]["action"], together[0].paths[0]["action"])  # the noise was drawn


def test_an_evaluation_steps_with_the_next_collection_with_the_same_results():
    evals = [_task(k, kind="eval", rng=False, mix=False, num_envs=3, steps=120) for k in range(2)]
    collects = [_task(k, seed=40) for k in range(2)]
    want = [run_tasks([t], make_rows("Hopper-v5", t.num_envs, 1))[0] for t in evals + collects]
    for threads in (0, 2):
        with Rollouts(threads) as pool:
            waiting = pool.submit(evals)
            assert not any(f.done() for f in waiting)  # it waits for the next collection
            collected = pool.submit(collects)
            assert all(f.done() for f in waiting + collected)
            alone = pool.submit(evals)  # the last evaluation: when it is waited for
            pool.finish()
            for a, b in zip(want, [f.result() for f in waiting + collected]):
                _same(a, b)
            for a, b in zip(want, [f.result() for f in alone]):
                _same(a, b)


def test_a_failed_rollout_is_one_line_naming_phase_and_seeds():
    with Rollouts(1) as pool:
        with pytest.raises(BcjaxError, match=r"collect of seed index 0 \(NoSuchEnv-v0\) failed: .*unknown environment id"):
            wait_all(pool.submit([_task(env_name="NoSuchEnv-v0")]), lambda n: None, 0)


def test_close_cancels_the_waiting_evaluation():
    pool = Rollouts(1)
    (fut,) = pool.submit([_task(kind="eval", mix=False)])
    pool.close()
    assert fut.cancelled()


def test_acting_does_not_import_jax():
    code = ("import sys, bcjax.acting.runner, bcjax.acting.rollout, bcjax.acting.envs, bcjax.acting.tasks; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})


def _start_run(tmp_path: Path) -> subprocess.Popen:
    """A long DAgger run of the bundled Hopper expert on one rollout thread, once its first row is logged."""
    cmd = [sys.executable, str(REPO / "scripts" / "train.py"), "--algo", "dagger", "--env_name", "Hopper-v4",
           "-n", "200", "--batch_size", "2000", "--eval_batch_size", "20000", "--num_agent_train_steps_per_iter", "20",
           "--video_log_freq", "-1", "--rollout_workers", "1", "--logdir", str(tmp_path), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        rows = list(tmp_path.glob("q2_*/metrics.jsonl"))
        if rows and rows[0].read_text().count("\n") >= 2:
            return proc
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"the run logged nothing: {proc.communicate()[1][-2000:]}")


def test_ctrl_c_stops_the_run_and_its_evaluation(tmp_path):
    proc = _start_run(tmp_path)
    proc.send_signal(signal.SIGINT)
    t = time.time()
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert time.time() - t < 30
