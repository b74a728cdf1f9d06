"""The run's speed machinery: compile once before the loop, vector envs wired in, costs reported."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from tiny_runs import stored, train

from bcjax.acting.envs import make_env
from bcjax.acting.rollout import sample_n_trajectories
from bcjax.run.config import Config

_compiles: list[str] = []  # programs compiled (or loaded from the persistent cache)
_traced: list[str] = []  # programs traced: each one a run needs, compiled or not


def _listen(event: str, duration: float, **kw: object) -> None:
    for suffix, names in (("backend_compile_duration", _compiles), ("jaxpr_trace_duration", _traced)):
        if event.endswith(suffix):
            names.append(str(kw.get("fun_name", "")))


jax.monitoring.register_event_duration_secs_listener(_listen)


def cartpole_expert(obs: np.ndarray) -> np.ndarray:
    obs = np.asarray(obs)
    return (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int32)


def expert_paths() -> list[dict]:
    return sample_n_trajectories(make_env("CartPole-v1", seed=0), cartpole_expert, 1, 200)


def test_iterations_after_the_first_compile_nothing():
    marks = []  # compiles so far, at each expert call: check, warm-up, then one relabel per iteration

    def expert(obs):
        marks.append(len(_compiles))
        return cartpole_expert(obs)

    # Sizes no other test uses, so this run's programs really compile here.
    cfg = Config(algo="dagger", n_iter=4, env_name="CartPole-v1", batch_size=150, num_agent_train_steps_per_iter=30,
                 train_batch_size=37, size=23, eval_batch_size=150, video_log_freq=-1, rollout_workers=0)
    start, traced = len(_compiles), len(_traced)
    result = train(cfg, expert, expert_paths())
    # a handful of programs, no eager jnp operation compiling one of its own: the seeds' keys, their split
    # and init as one ("initial"), the split of the keys in three per iteration, the fused fit and the buffer's
    # insert (those of this run's sizes are new here; the split's may have been traced by an earlier test)
    assert {"initial", "fit", "insert"} <= set(_traced[traced:]) <= {"initial", "_split", "fit", "insert"}
    assert len(marks) == 2 + 3
    assert any("fit" in name for name in _compiles[start:marks[1]])  # compiled before the loop
    assert any("insert" in name for name in _compiles[start:marks[1]])
    assert _compiles[marks[2]:] == []  # iteration 1's relabel onwards: nothing compiles
    assert result.timings["compile"] > 0
    assert 0 < result.peak_rss_mib < 64 * 1024


def test_dagger_with_vector_envs():
    cfg = Config(algo="dagger", n_iter=3, env_name="CartPole-v1", batch_size=300, num_agent_train_steps_per_iter=200,
                 eval_batch_size=400, video_log_freq=-1, num_envs=3, vector_mode="sync", num_seeds=2, rollout_workers=0)
    result = train(cfg, cartpole_expert, expert_paths())
    for k in range(2):
        taken = int(result.rows[-1]["Train_EnvstepsSoFar"][k])  # the kept episodes' steps
        rows = stored(result, k)  # no wrap: in order
        collected = len(rows["action"]) - 200
        assert taken == collected >= 2 * 300
        np.testing.assert_array_equal(rows["action"][200:], cartpole_expert(rows["observation"][200:]))
    assert all(row["Eval_AverageEpLen"][k] > 0 for row in result.rows for k in range(2))


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_cpu_thread_limit_leaves_every_thread_free_to_run_anywhere():
    code = ("import os; from bcjax.run.perf import limit_cpu_threads; before = os.sched_getaffinity(0); "
            "limit_cpu_threads(1); import jax; jax.numpy.ones(3).sum().block_until_ready(); "
            "tids = os.listdir('/proc/self/task'); "
            "print(len(tids) > 1 and all(os.sched_getaffinity(int(t)) == before for t in tids))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="the process's start time is read from /proc")
def test_the_start_up_counts_from_the_process_start():
    code = ("import time; t = time.time(); time.sleep(0.5); from bcjax.run.main import process_start; "
            "s = process_start(); print(t - 0.5 < s <= t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
