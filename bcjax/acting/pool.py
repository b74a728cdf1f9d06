"""Rollouts as tasks, run in this process or spread over a pool of worker processes.

A `RolloutTask` is one seed's collection or evaluation: the policy's numpy
params, the env seed and the state of the noise generator. Its result depends
on nothing else, so the pool gives the same trajectories as running the tasks
here one by one. Workers are plain `python -m bcjax.acting.pool` processes fed
pickles on stdin: they import numpy and gymnasium only (never JAX), and their
start-up overlaps the main process's imports and compilation.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

import numpy as np

from bcjax.core.mlp import MLPSpec, NumpyMLP

MAX_DEFAULT_WORKERS = 8  # beyond this the main process's training and relabelling are the bottleneck


@dataclass(frozen=True)
class RolloutTask:
    kind: str  # "collect" or "eval": names the task in errors
    seed_index: int
    env_name: str
    num_envs: int
    vector_mode: str
    spec: MLPSpec
    params: dict[str, Any]  # flax variables with numpy leaves
    env_seed: int
    rng_state: dict | None  # a PCG64 state (noise), or None: the policy's mode
    min_steps: int
    ep_len: int
    mix: Mixing | None = None  # beta-mixed DAgger: the expert drives some steps


@dataclass(frozen=True)
class Mixing:
    """Each step's action is the expert's with probability `beta` (draws seeded by `draw_seed`)."""

    expert: Callable[[np.ndarray], np.ndarray]  # picklable and JAX-free, e.g. ExpertPolicy.mean_action_np
    beta: float
    draw_seed: int


@dataclass
class RolloutResult:
    paths: list[dict[str, np.ndarray]]
    steps: int  # env steps taken
    rng_state: dict | None  # the noise generator's state afterwards (evaluation continues collection's stream)
    expert_steps: int = 0  # steps the expert drove (beta-mixing)


class _Envs:
    """One env (or vector env) per (task, num_envs, mode), kept for the next task."""

    def __init__(self) -> None:
        self._envs: dict[tuple, Any] = {}

    def get(self, task: RolloutTask) -> Any:
        from bcjax.acting.envs import make_env, make_vector_env

        key = (task.env_name, task.num_envs, task.vector_mode, task.seed_index)
        if key not in self._envs:
            self._envs[key] = (make_env(task.env_name) if task.num_envs == 1 else
                               make_vector_env(task.env_name, task.num_envs, task.vector_mode))
        return self._envs[key]

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


def run_task(task: RolloutTask, envs: _Envs) -> RolloutResult:
    """The one implementation of a rollout task, here or in a worker."""
    from bcjax.acting.rollout import MixedActor, sample_trajectories

    rng = None
    if task.rng_state is not None:
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = task.rng_state
    env = envs.get(task)
    env.reset(seed=task.env_seed)
    actor = NumpyMLP(task.spec, task.params, rng)
    if task.mix is not None:  # its own draws: the policy's noise stream is the same as without mixing
        actor = MixedActor(actor, task.mix.expert, task.mix.beta, np.random.default_rng(task.mix.draw_seed))
    paths, steps = sample_trajectories(env, actor, task.min_steps, task.ep_len)
    return RolloutResult(paths, steps, None if rng is None else rng.bit_generator.state,
                         actor.expert_steps if task.mix is not None else 0)


def default_workers() -> int:
    return min(len(os.sched_getaffinity(0)), MAX_DEFAULT_WORKERS)


class WorkerDied(Exception):
    """A worker exited or its task raised; the message names the task and seed."""


def _send(stream: BinaryIO, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _recv(stream: BinaryIO) -> object:
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    (n,) = struct.unpack("<Q", head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


def describe(task: RolloutTask) -> str:
    return f"{task.kind} of seed index {task.seed_index} ({task.env_name}, env seed {task.env_seed})"


def _exit_reason(proc: subprocess.Popen) -> str:
    try:
        code = proc.wait(timeout=2)  # its pipe closed: it is exiting
    except subprocess.TimeoutExpired:
        return "it stopped answering"
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


class RolloutPool:
    """`submit` gives a Future of a task's `RolloutResult`; with 0 workers it runs the task at once, here.

    A dead worker (killed, or an env that raised) fails its task's future with
    `WorkerDied` and breaks the pool: every later submit fails at once.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._local = _Envs()
        self._tasks: queue.Queue = queue.Queue()
        self._broken: str | None = None
        self._procs: list[subprocess.Popen] = []
        self._threads: list[threading.Thread] = []
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        env.pop("MUJOCO_GL", None)  # workers never render; a GL setting meant for video must not stop them
        for _ in range(workers):
            # A new interpreter, not fork: forking a process that runs JAX's threads can deadlock.
            proc = subprocess.Popen([sys.executable, "-m", "bcjax.acting.pool"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, env=env, start_new_session=False)
            self._procs.append(proc)
            thread = threading.Thread(target=self._serve, args=(proc,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, task: RolloutTask) -> Future:
        fut: Future = Future()
        if self.workers == 0:
            fut.set_result(run_task(task, self._local))
        elif self._broken is not None:
            fut.set_exception(WorkerDied(self._broken))
        else:
            self._tasks.put((task, fut))
        return fut

    def _serve(self, proc: subprocess.Popen) -> None:
        # One thread per worker: hand it a task, wait for its answer, repeat.
        while True:
            item = self._tasks.get()
            if item is None:
                return
            task, fut = item
            if self._broken is not None:
                fut.set_exception(WorkerDied(self._broken))
                continue
            try:
                _send(proc.stdin, task)
                ok, value = _recv(proc.stdout)
            except Exception:  # EOF, a broken pipe, an unreadable answer: the worker is gone
                ok, value = False, f"the rollout worker died ({_exit_reason(proc)})"
            if ok:
                fut.set_result(value)
            else:
                self._broken = f"{describe(task)} failed: {value}"
                fut.set_exception(WorkerDied(self._broken))

    def close(self) -> None:
        """Stop the workers: EOF on their stdin ends them; any still running after a moment are killed."""
        self._local.close()
        for _ in self._threads:
            self._tasks.put(None)
        for proc in self._procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in self._procs:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> "RolloutPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _worker_main() -> None:
    # The protocol owns the real stdout; whatever an env prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the main process, which closes us
    inp = sys.stdin.buffer
    envs = _Envs()
    while True:
        try:
            task = _recv(inp)
        except EOFError:
            break
        try:
            answer = (True, run_task(task, envs))
        except Exception as e:  # reported to the main process, which names the task
            answer = (False, f"{type(e).__name__}: {e}".splitlines()[0])
        _send(out, answer)
    envs.close()


if __name__ == "__main__":
    # Through the package module, so results pickle as bcjax.acting.pool classes, not __main__ ones.
    from bcjax.acting.pool import _worker_main as main

    main()
