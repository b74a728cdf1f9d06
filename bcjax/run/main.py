"""`scripts/train.py`: parse flags, load the expert and its data, run, report errors on one line."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bcjax.errors import BcjaxError, run_script
from bcjax.run.config import Config, given_flags
from bcjax.run.flags import select_device

if TYPE_CHECKING:
    from bcjax.acting.pool import RolloutPool


def _select_device(cfg: Config, given: dict) -> None:
    """A given --which_gpu wins; else an existing CUDA_VISIBLE_DEVICES (the user's or a scheduler's choice) is kept."""
    keep = "which_gpu" not in given and "CUDA_VISIBLE_DEVICES" in os.environ
    select_device(cfg.no_gpu, None if keep else cfg.which_gpu)


def check_expert_return(expert: Callable[[np.ndarray], np.ndarray], cfg: Config, paths: list[dict]) -> None:
    """One episode of the expert before training: far below its data's return means it does not fit the task
    (another task version, another observation layout), and a student would learn from it in silence."""
    from bcjax.data.expert_data import collect_expert_paths

    data_return = float(np.mean([p["reward"].sum() for p in paths]))
    (ep,) = collect_expert_paths(expert, cfg.env_name, 1, cfg.seed, cfg.ep_len)
    got = float(ep["reward"].sum())
    print(f"expert check: one episode returns {got:.1f} in {len(ep['reward'])} steps (expert data: {data_return:.1f})")
    if got < data_return - 0.5 * abs(data_return) and not cfg.allow_weak_expert:
        raise BcjaxError(
            f"the expert returns {got:.1f} on {cfg.env_name}, under half of its data's {data_return:.1f}: it does not "
            "fit this task (another task version or observation layout?); use the matching --env_name or expert, "
            "or pass --allow_weak_expert to train anyway")


def run(cfg: Config, on_row: Callable[[dict, Path], None] | None = None, limit_threads: bool = False) -> int:
    """Train as `cfg` says; `on_row` gets each logged metrics row and the run directory.

    limit_threads (scripts/train.py only): size JAX's CPU pool to `cfg.cpu_threads`; a library caller's
    process keeps its own.
    """
    from bcjax.acting.pool import RolloutPool, default_workers

    # First: the workers start up while this process imports JAX and compiles.
    pool = RolloutPool(default_workers() if cfg.rollout_workers is None else cfg.rollout_workers)
    try:
        return _run(cfg, on_row, pool, limit_threads)
    finally:
        pool.close()  # also on Ctrl-C and errors: no worker outlives the run


def _run(cfg: Config, on_row: Callable[[dict, Path], None] | None, pool: "RolloutPool", limit_threads: bool) -> int:
    import jax

    if cfg.no_gpu:
        jax.config.update("jax_platforms", "cpu")
    from bcjax.run.compile_cache import enable_compile_cache

    enable_compile_cache(not cfg.no_compile_cache)  # before anything compiles
    if limit_threads and cfg.cpu_threads:
        from bcjax.run.perf import limit_cpu_threads

        limit_cpu_threads(cfg.cpu_threads)  # before the first JAX computation sizes the CPU pool
    from bcjax.acting.envs import env_info, make_env
    from bcjax.acting.gl import check_mujoco_gl_setting

    check_mujoco_gl_setting()
    from bcjax.core.adapters import describe_input
    from bcjax.data.expert import load_expert
    from bcjax.data.expert_data import load_expert_data
    from bcjax.data.files import check_writable_dir, write_failure
    from bcjax.run.driver import check_expert, check_expert_data, train
    from bcjax.run.lock import RunLock
    from bcjax.run.logger import RunLogger, make_run_dir, truncate_metrics, write_config
    from bcjax.run.memory import check_run_fits_memory
    from bcjax.run.signals import Stopped, stop_on_signals

    # Check the task and the files against each other before a run directory exists.
    env = make_env(cfg.env_name)
    info = env_info(env)
    env.close()
    check_writable_dir(cfg.resume or cfg.logdir, "--resume" if cfg.resume else "--logdir")
    if cfg.expert_policy_file is None and cfg.expert_data is not None:
        if cfg.is_dagger:  # a bundled expert would relabel another expert's data: refuse the silent mix
            raise BcjaxError("DAgger relabels with the expert that made --expert_data: give that expert with "
                             "--expert_policy_file (the bundled experts are other policies)")
        expert = None  # BC learns from the data alone
        print("expert policy: none (BC from --expert_data only)")
    else:
        if cfg.expert_policy_file is None:  # the expert bcjax ships for the task (config.json records the path)
            from bcjax.data.bundled import bundled_expert_path

            cfg = cfg.replace(expert_policy_file=str(bundled_expert_path(cfg.env_name)))
            print(f"expert policy: bundled {cfg.expert_policy_file}")
        expert = load_expert(cfg.expert_policy_file).for_task(cfg.env_name)
        note = describe_input(cfg.env_name, info.obs_dim, expert.obs_dim)
        if note:
            print(f"expert input: {note}")
        check_expert(expert, info, np.zeros((1, info.obs_dim), np.float32))
    if cfg.expert_data is None:  # roll the expert out once; cached under the logdir
        from bcjax.data.bundled import DEFAULT_EXPERT_TRAJECTORIES, cached_expert_data

        cfg = cfg.replace(expert_data=str(cached_expert_data(
            expert, cfg.expert_policy_file, cfg.env_name, cfg.logdir, cfg.seed, cfg.ep_len,
            n_traj=cfg.expert_data_trajectories or DEFAULT_EXPERT_TRAJECTORIES)))
        paths = load_expert_data(cfg.expert_data, n_traj=cfg.expert_data_trajectories, info=info)
    else:
        paths = load_expert_data(cfg.expert_data, n_traj=cfg.expert_data_trajectories, info=info)
        check_expert_data(paths, info)
        if expert is not None and not cfg.resume:
            check_expert_return(expert, cfg, paths)
    check_run_fits_memory(cfg, info, sum(len(p["observation"]) for p in paths))
    purge_step = None
    lock = None
    if cfg.resume:  # same directory; metrics after the saved iteration are logged again
        run_dir, last = Path(cfg.resume), cfg.resume_step
        lock = RunLock(run_dir).acquire()
        truncate_metrics(run_dir, last)
        purge_step = last + 1
        print(f"resuming {run_dir} after iteration {last}")
    else:
        run_dir = make_run_dir(cfg)
        lock = RunLock(run_dir).acquire()
        write_config(run_dir, cfg)
        print(f"run directory: {run_dir}")
    try:
        try:
            logger = RunLogger(run_dir, purge_step=purge_step, on_row=on_row)
        except OSError as e:
            raise write_failure(run_dir, e) from None
        try:
            with stop_on_signals():
                result = train(cfg, expert, paths, logger, pool)
        finally:
            logger.close()
    except Stopped as stop:
        how = (f"resume with: python scripts/train.py --resume {run_dir}" if cfg.save_params else
               "it cannot be resumed (trained without --save_params)")
        print(f"{stop} of {cfg.n_iter}; {how}", file=sys.stderr)
        return stop.exit_code
    except BcjaxError:
        if not cfg.resume and not (run_dir / "metrics.jsonl").exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing was logged: leave no empty run directory
        raise
    finally:
        lock.release()
    t = result.timings
    from bcjax.run.compile_cache import cache_hits

    # "compile" is tracing, lowering and compiling, or loading from the persistent cache: say how many loaded.
    cached = f" ({cache_hits()} programs from the compilation cache)" if cache_hits() else ""
    print("time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()) + cached
          + f"; peak RSS {result.peak_rss_mib:.0f} MiB")
    return 0


def resolve_config(given: dict) -> Config:
    """The run's config from the flags given: a new one, or for --resume the run directory's (with the
    runtime flags given; checked as flags are)."""
    if not given.get("resume"):
        return Config(**given)
    from bcjax.run.resume import resume_config

    return resume_config(given["resume"], given)


def main(argv: list[str] | None = None) -> int:
    """scripts/train.py. Process-wide settings are made here, not in `run`, so a library caller keeps its own."""
    def body() -> int:
        given = given_flags(argv)
        cfg = resolve_config(given)
        _select_device(cfg, given)
        from bcjax.acting.envs import ignore_outdated_task_warnings

        ignore_outdated_task_warnings()
        return run(cfg, limit_threads=True)

    return run_script(body, "interrupted: the run directory keeps what was logged so far")
