"""`scripts/train.py`: parse flags, load the expert and its data, run, report errors on one line."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bcjax.errors import BcjaxError, run_script
from bcjax.run.config import Config, given_flags
from bcjax.run.flags import select_device

if TYPE_CHECKING:
    from bcjax.acting.envs import EnvInfo


def _select_device(cfg: Config, given: dict) -> None:
    """A given --which_gpu wins; else an existing CUDA_VISIBLE_DEVICES (the user's or a scheduler's choice) is kept."""
    keep = "which_gpu" not in given and "CUDA_VISIBLE_DEVICES" in os.environ
    select_device(cfg.no_gpu, None if keep else cfg.which_gpu)


def _start_jax(cfg: Config, limit_threads: bool) -> None:
    """The process's JAX settings, before anything compiles."""
    select_device(cfg.no_gpu)  # again for a library caller, whose JAX may be imported already
    from bcjax.run.perf import enable_compile_cache, limit_cpu_threads

    enable_compile_cache(not cfg.no_compile_cache)
    if limit_threads:
        limit_cpu_threads(cfg.cpu_threads)  # before the first JAX computation sizes the CPU pool


def run(cfg: Config, on_row: Callable[[dict, Path], None] | None = None, limit_threads: bool = False,
        started: float | None = None) -> int:
    """Train as `cfg` says; `on_row` gets each logged metrics row and the run directory.

    limit_threads (scripts/train.py only): size JAX's CPU pool to `cfg.cpu_threads`; a library caller's
    process keeps its own. `started`: when the caller's work began (scripts/train.py: the process's start),
    for the start-up the timing line reports; by default now.
    """
    started = time.time() if started is None else started
    _start_jax(cfg, limit_threads)
    from bcjax.acting.gl import check_mujoco_gl_setting

    check_mujoco_gl_setting()  # before anything imports mujoco, whose import fails without the GL asked for
    from bcjax.data.files import check_writable_dir
    from bcjax.run.driver import iterate, open_run, task_info
    from bcjax.run.signals import Stopped, stop_on_signals

    imported = time.time()
    info = task_info(cfg.env_name)
    check_writable_dir(cfg.resume or cfg.logdir, "--resume" if cfg.resume else "--logdir")
    given_data = cfg.expert_data is not None
    cfg, expert, paths = load_inputs(cfg, info)
    loaded = time.time()
    try:
        with stop_on_signals(), open_run(cfg, expert, paths, info, logged=True, on_row=on_row,
                                         check_return=given_data and not cfg.resume) as job:
            startup = {"imports": imported - started, "inputs": loaded - imported, **job.startup}
            startup = {"start-up": time.time() - started, **startup}
            result = iterate(job)
    except Stopped as stop:
        how = (f"resume with: python scripts/train.py --resume {job.run_dir}" if cfg.save_params else
               f"its policy is saved in {job.run_dir} (for scripts/evaluate.py); it cannot be resumed "
               "(trained without --save_params)")
        print(f"{stop} of {cfg.n_iter}; {how}", file=sys.stderr)
        return stop.exit_code
    print(timing_line(startup, result.timings, time.time() - started, result.peak_rss_mib))
    return 0


def timing_line(startup: dict[str, float], timings: dict[str, float], wall: float, rss_mib: float) -> str:
    """The closing line: start-up (to the first iteration) by part, the loop's phases, and the fixed cost,
    everything but env steps (rollouts: collection, with the evaluation before it), updates (training), the
    evaluations stepped alone (evaluation: the last one, and those a save waits for) and rendering videos."""
    from bcjax.run.perf import cache_hits

    parts = ", ".join(f"{k} {v:.1f}" for k, v in list(startup.items())[1:])
    phases = ", ".join(f"{k} {v:.1f}" for k, v in timings.items() if k != "total")
    work = ("rollouts", "training", "evaluation", "video")
    fixed = wall - sum(timings.get(k, 0.0) for k in work)
    # "compile" is tracing, lowering and compiling, or loading from the persistent cache: say how many loaded.
    cached = f"; {cache_hits()} programs from the compilation cache" if cache_hits() else ""
    return (f"time (s): start-up {startup['start-up']:.1f} ({parts}), {phases}, total {wall:.1f}; fixed cost "
            f"{fixed:.1f} (all but {', '.join(k for k in work if k in timings)}){cached}; peak RSS {rss_mib:.0f} MiB")


def process_start() -> float:
    """When this process started (Linux: its start tick in /proc against the uptime), else now."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return time.time()
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def load_inputs(cfg: Config, info: EnvInfo) -> tuple[Config, object, list[dict]]:
    """The expert (--expert_policy_file, the bundled one, or none for BC from data alone) and its data
    (--expert_data, or collected from the expert once and cached under the logdir); `cfg` names both."""
    from bcjax.core.adapters import describe_input
    from bcjax.data.bundled import DEFAULT_EXPERT_TRAJECTORIES, bundled_expert_path, cached_expert_data
    from bcjax.data.expert import load_expert
    from bcjax.data.expert_data import load_expert_data
    from bcjax.run.driver import check_expert

    expert = None  # BC from --expert_data alone
    if cfg.expert_policy_file is None and cfg.expert_data is not None:
        if cfg.is_dagger:  # a bundled expert would relabel another expert's data: refuse the silent mix
            raise BcjaxError("DAgger relabels with the expert that made --expert_data: give that expert with "
                             "--expert_policy_file (the bundled experts are other policies)")
        print("expert policy: none (BC from --expert_data only)")
    else:
        if cfg.expert_policy_file is None:  # the expert bcjax ships for the task (config.json records the path)
            cfg = cfg.replace(expert_policy_file=str(bundled_expert_path(cfg.env_name)))
            print(f"expert policy: bundled {cfg.expert_policy_file}")
        expert = load_expert(cfg.expert_policy_file).for_task(cfg.env_name)
        note = describe_input(cfg.env_name, info.obs_dim, expert.obs_dim)
        if note:
            print(f"expert input: {note}")
    if cfg.expert_data is None:  # roll the expert out once; cached under the logdir
        check_expert(expert, info, np.zeros((1, info.obs_dim), np.float32))  # before it acts
        cfg = cfg.replace(expert_data=str(cached_expert_data(expert, cfg.expert_policy_file, cfg.env_name, cfg.logdir, cfg.seed,
                                                             cfg.ep_len, cfg.expert_data_trajectories or DEFAULT_EXPERT_TRAJECTORIES)))
    return cfg, expert, load_expert_data(cfg.expert_data, n_traj=cfg.expert_data_trajectories, info=info)


def resolve_config(given: dict) -> Config:
    """The run's config from the flags given: a new one, or for --resume the run directory's (with the
    runtime flags given; checked as flags are)."""
    if not given.get("resume"):
        return Config(**given)
    from bcjax.run.checkpoint import resume_config

    return resume_config(given["resume"], given)


def main(argv: list[str] | None = None) -> int:
    """scripts/train.py. Process-wide settings are made here, not in `run`, so a library caller keeps its own."""
    started = process_start() if argv is None else time.time()  # argv None: this process is scripts/train.py

    def body() -> int:
        given = given_flags(argv)
        cfg = resolve_config(given)
        _select_device(cfg, given)
        from bcjax.acting.envs import ignore_outdated_task_warnings

        ignore_outdated_task_warnings()
        return run(cfg, limit_threads=True, started=started)

    return run_script(body, "interrupted: the run directory keeps what was logged so far")
