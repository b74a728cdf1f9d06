"""Rollout tasks (one seed's collection or evaluation) and `Rollouts`, which steps them together.

A `RolloutTask` is one seed's rollout: the policy's numpy params, the env seed and the noise seed. Its result
depends on nothing else: tasks step together in one env of rows (a MuJoCo batch on `threads` threads: a
phase's seeds, and an evaluation with the next collection), and give the same trajectories at any thread
count and number of rows, alone or grouped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future
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


def run_tasks(tasks: list[RolloutTask], env: Any) -> list[RolloutResult]:
    """The tasks (of one env, spec and ep_len) stepped together on `env`'s rows, each on its num_envs rows."""
    t0 = tasks[0]
    assert all((t.env_name, t.spec, t.ep_len) == (t0.env_name, t0.spec, t0.ep_len) for t in tasks)
    rngs = [None if t.noise_seed is None else np.random.default_rng(t.noise_seed) for t in tasks]
    # beta-mixing draws from its own generator: the noise is the same as without mixing
    mix = [None if t.mix is None else (t.mix.expert, t.mix.beta, np.random.default_rng(t.mix.draw_seed)) for t in tasks]
    ns = [t.num_envs for t in tasks]
    policies = SeedPolicies(t0.spec, [t.params for t in tasks], rngs, mix, ns, t0.ep_len)
    out = sample_streams(env, policies, [t.env_seed for t in tasks], ns, [t.min_steps for t in tasks], t0.ep_len)
    return [RolloutResult(*result) for result in out]


class Rollouts:
    """`submit(tasks)` gives a Future of each task's `RolloutResult`; all of a call's tasks step together.

    Collection runs at once, in the calling thread. An evaluation waits: it runs with the next collection, in
    the same batch (in DAgger the evaluated policy is the one that collects next, and one batch step of both
    phases' rows costs little more than of one's), or at `finish()`. Results do not depend on the grouping.
    """

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self._envs: dict[tuple, Any] = {}
        self._pending: tuple[list[RolloutTask], list[Future]] = ([], [])  # the evaluation waiting

    def submit(self, tasks: list[RolloutTask]) -> list[Future]:
        futures = [Future() for _ in tasks]
        if tasks[0].kind == "eval":
            self.finish()  # one evaluation waits at most
            self._pending = (tasks, futures)
        else:
            waiting, self._pending = self._pending, ([], [])
            if waiting[0] and not _together(waiting[0][0], tasks[0]):
                self._run(*waiting)
                waiting = ([], [])
            self._run(waiting[0] + tasks, waiting[1] + futures)
        return futures

    def finish(self) -> None:
        """Run the evaluation waiting, if any."""
        waiting, self._pending = self._pending, ([], [])
        if waiting[0]:
            self._run(*waiting)

    def _run(self, tasks: list[RolloutTask], futures: list[Future]) -> None:
        t = tasks[0]
        try:
            key = (t.env_name, sum(task.num_envs for task in tasks))
            if key not in self._envs:
                self._envs[key] = make_rows(t.env_name, key[1], self.threads)
            results = run_tasks(tasks, self._envs[key])
        except Exception as e:  # noqa: BLE001 - reported through the futures, on one line
            kinds = " and ".join(dict.fromkeys(task.kind for task in tasks))
            seeds = ", ".join(dict.fromkeys(str(task.seed_index) for task in tasks))
            failed = RolloutFailed(f"{kinds} of seed index {seeds} ({t.env_name}) failed: "
                                   + f"{type(e).__name__}: {e}".splitlines()[0])
            for fut in futures:
                fut.set_exception(failed)
            return
        for fut, result in zip(futures, results):
            fut.set_result(result)

    def close(self) -> None:
        """Drop the evaluation waiting (its futures are cancelled)."""
        for fut in self._pending[1]:
            fut.cancel()
        self._pending = ([], [])

    def __enter__(self) -> Rollouts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _together(a: RolloutTask, b: RolloutTask) -> bool:
    """Tasks of one env, spec and episode length can step in one batch."""
    return (a.env_name, a.spec, a.ep_len) == (b.env_name, b.spec, b.ep_len)
