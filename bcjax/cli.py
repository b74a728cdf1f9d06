"""`scripts/train.py`: parse flags, load the expert and its data, run, report errors on one line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from bcjax.config import Config, parse_config
from bcjax.errors import run_script


def _select_device(cfg: Config) -> None:
    # Must happen before JAX picks its backend.
    if cfg.no_gpu:
        os.environ["JAX_PLATFORMS"] = "cpu"
    else:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", str(cfg.which_gpu))


def run(cfg: Config, on_row: Callable[[dict, Path], None] | None = None) -> int:
    """Train as `cfg` says; `on_row` gets each logged metrics row and the run directory."""
    import jax

    if cfg.no_gpu:
        jax.config.update("jax_platforms", "cpu")
    if cfg.cpu_threads:
        from bcjax.perf import limit_cpu_threads

        limit_cpu_threads(cfg.cpu_threads)
    from bcjax.envs import env_info, make_env
    from bcjax.video import check_mujoco_gl_setting

    check_mujoco_gl_setting()
    from bcjax.expert import load_expert
    from bcjax.expert_data import load_expert_data
    from bcjax.logger import RunLogger, make_run_dir, write_config
    from bcjax.train_loop import check_expert, check_expert_data, train

    # Check the task and the files against each other before a run directory exists.
    env = make_env(cfg.env_name)
    info = env_info(env)
    env.close()
    if cfg.expert_policy_file is None:  # the expert bcjax ships for the task (config.json records the path)
        from bcjax.experts import bundled_expert_path

        cfg = cfg.replace(expert_policy_file=str(bundled_expert_path(cfg.env_name)))
        print(f"expert policy: bundled {cfg.expert_policy_file}")
    expert = load_expert(cfg.expert_policy_file)
    if cfg.expert_data is None:  # roll the expert out once; cached under the logdir
        import numpy as np

        from bcjax.experts import cached_expert_data

        check_expert(expert, info, np.zeros((1, info.obs_dim), np.float32))
        cfg = cfg.replace(expert_data=str(cached_expert_data(
            expert, cfg.expert_policy_file, cfg.env_name, cfg.logdir, cfg.seed, cfg.ep_len)))
    paths = load_expert_data(cfg.expert_data)
    check_expert_data(paths, info)
    check_expert(expert, info, paths[0]["observation"].astype("float32"))
    purge_step = None
    if cfg.resume:  # same directory; metrics after the saved iteration are logged again
        from bcjax.saved_run import resume_iteration, truncate_metrics

        run_dir, last = Path(cfg.resume), resume_iteration(cfg.resume)
        truncate_metrics(run_dir, last)
        purge_step = last + 1
        print(f"resuming {run_dir} after iteration {last}")
    else:
        run_dir = make_run_dir(cfg)
        write_config(run_dir, cfg)
        print(f"run directory: {run_dir}")
    logger = RunLogger(run_dir, purge_step=purge_step, on_row=on_row)
    try:
        result = train(cfg, expert, paths, logger)
    finally:
        logger.close()
    t = result.timings
    print("time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()) + f"; peak RSS {result.peak_rss_mib:.0f} MiB")
    return 0


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        cfg = parse_config(argv)
        if cfg.resume:
            from bcjax.saved_run import explicit_flags, resume_config

            cfg = resume_config(cfg.resume, explicit_flags(argv))
        _select_device(cfg)
        return run(cfg)

    return run_script(body, "interrupted: the run directory keeps what was logged so far")
