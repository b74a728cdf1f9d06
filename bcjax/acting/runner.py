"""Rollout tasks (one seed's collection or evaluation) and `Rollouts`, which runs all of a phase's tasks together.

A `RolloutTask` is one seed's rollout: the policy's numpy params, the env seed and the noise seed. Its result
depends on nothing else: the tasks of a call step together in one env of rows (a MuJoCo batch on `threads`
threads), and give the same trajectories at any thread count and number of rows, alone or grouped.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from bcjax.acting.envs import GymEnvs, make_env
from bcjax.acting.rollout import SeedPolicies, Trajectory, sample_streams
from bcjax.acting.tasks import TASKS, BatchEnv
from bcjax.core.mlp import MLPSpec

MAX_DEFAULT_THREADS = 8  # beyond this the main thread's training and relabelling are the bottleneck


@dataclass(frozen=True)
class Mixing:
    """Each step's action is the expert's with probability `beta` (draws seeded by `draw_seed`)."""

    expert: Callable[[np.ndarray], np.ndarray]  # e.g. ExpertPolicy.mean_action_np
    beta: float
    draw_seed: int


@dataclass(frozen=True)
class RolloutTask:
    kind: str  # "collect" or "eval": names the task in errors; each kind steps its own env
    seed_index: int
    env_name: str
    num_envs: int
    spec: MLPSpec
    params: dict[str, Any]  # flax variables with numpy leaves
    env_seed: int
    noise_seed: int | None  # seeds the policy's noise (per episode, bcjax.acting.rollout.SeedPolicies); None: its mode
    min_steps: int
    ep_len: int
    mix: Mixing | None = None  # beta-mixed DAgger: the expert drives some steps


@dataclass
class RolloutResult:
    paths: list[Trajectory]
    steps: int  # env steps of the paths
    expert_steps: int = 0  # those the expert drove (beta-mixing)


class RolloutFailed(Exception):
    """A rollout raised; the message names the phase, the seeds and the task."""


def default_threads() -> int:
    return min(len(os.sched_getaffinity(0)), MAX_DEFAULT_THREADS)


def make_rows(env_name: str, nsim: int, nthread: int) -> BatchEnv | GymEnvs:
    """`nsim` copies of the task: a MuJoCo batch on `nthread` threads where bcjax.acting.tasks has the task,
    else gymnasium envs in a loop."""
    if env_name in TASKS:
        return BatchEnv(env_name, nsim, max(1, nthread))
    return GymEnvs([make_env(env_name) for _ in range(nsim)])


def run_tasks(tasks: list[RolloutTask], env: Any, stop: Callable[[], bool] | None = None) -> list[RolloutResult]:
    """The tasks (one env, size and spec) stepped together on `env`'s rows, num_envs per task."""
    t0 = tasks[0]
    assert all((t.env_name, t.num_envs, t.spec, t.min_steps, t.ep_len)
               == (t0.env_name, t0.num_envs, t0.spec, t0.min_steps, t0.ep_len) for t in tasks)
    rngs = [None if t.noise_seed is None else np.random.default_rng(t.noise_seed) for t in tasks]
    # beta-mixing draws from its own generator: the noise is the same as without mixing
    mix = [None if t.mix is None else (t.mix.expert, t.mix.beta, np.random.default_rng(t.mix.draw_seed)) for t in tasks]
    policies = SeedPolicies(t0.spec, [t.params for t in tasks], rngs, mix, t0.num_envs, t0.ep_len)
    out = sample_streams(env, policies, [t.env_seed for t in tasks], t0.num_envs, t0.min_steps, t0.ep_len, stop)
    return [RolloutResult(*result) for result in out]


class Rollouts:
    """`submit(tasks)` runs a phase's tasks together and gives a Future of each task's `RolloutResult`.

    Collection runs at once, in the calling thread; evaluation runs in a thread of its own (MuJoCo's batch
    step releases the GIL), on its own env, while the caller goes on. With 0 threads everything runs at once
    in the calling thread, on one MuJoCo thread.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._envs: dict[tuple, Any] = {}
        self._stop = threading.Event()
        self._eval = ThreadPoolExecutor(1, thread_name_prefix="bcjax-eval") if threads else None
        self._evaluating: list[Future] = []

    def submit(self, tasks: list[RolloutTask]) -> list[Future]:
        futures = [Future() for _ in tasks]
        if self._eval is None or tasks[0].kind == "collect":
            self._run(tasks, futures)
        else:  # after the evaluation before it: one runs while the caller's next iteration works, none piles up
            wait(self._evaluating)
            self._evaluating = futures
            self._eval.submit(self._run, tasks, futures)
        return futures

    def _run(self, tasks: list[RolloutTask], futures: list[Future]) -> None:
        t = tasks[0]
        try:
            key = (t.kind, t.env_name, t.num_envs * len(tasks))
            if key not in self._envs:
                self._envs[key] = make_rows(t.env_name, t.num_envs * len(tasks), self.threads)
            results = run_tasks(tasks, self._envs[key], self._stop.is_set)
        except Exception as e:  # noqa: BLE001 - reported through the futures, on one line
            seeds = ", ".join(str(task.seed_index) for task in tasks)
            failed = RolloutFailed(f"{t.kind} of seed index {seeds} ({t.env_name}) failed: "
                                   + f"{type(e).__name__}: {e}".splitlines()[0])
            for fut in futures:
                fut.set_exception(failed)
            return
        for fut, result in zip(futures, results):
            fut.set_result(result)

    def close(self) -> None:
        """Stop an evaluation in flight at its next step and wait for its thread."""
        self._stop.set()
        if self._eval is not None:
            self._eval.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Rollouts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
