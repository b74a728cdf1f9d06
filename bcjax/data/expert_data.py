"""CS285 expert data: a pickled list of trajectory dicts (or a Minari dataset, bcjax.data.minari)."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bcjax.acting.envs import EnvInfo, env_info, make_env
from bcjax.acting.rollout import Trajectory, sample_trajectory
from bcjax.data.files import write_atomic
from bcjax.data.minari import PREFIX, load_minari
from bcjax.data.safe_pickle import check_trajectory_count, load_pickle, validate_paths
from bcjax.errors import BcjaxError


def load_expert_data(source: str | Path, flag: str = "--expert_data", n_traj: int | None = None,
                     info: EnvInfo | None = None) -> list[Trajectory]:
    """The first `n_traj` (default all) trajectories of CS285 expert data (restricted unpickler), or of
    a Minari dataset (`minari:DATASET_ID` or its directory; `info` checks its spaces against the task)."""
    if str(source).startswith(PREFIX) or Path(source).is_dir():  # a Minari dataset, not a CS285 pickle
        return load_minari(str(source), n_traj, info)
    paths = validate_paths(load_pickle(source, "expert data", flag), f"expert data {source}")
    check_trajectory_count(n_traj, len(paths), f"expert data {source}")
    return paths[:n_traj]


def save_expert_data(paths: list[Trajectory], path: str | Path) -> None:
    """Write trajectories in the CS285 expert-data format (atomically, through a unique temporary name)."""
    write_atomic(path, pickle.dumps([{k: np.asarray(v) for k, v in p.items()} for p in paths]))


def collect_expert_paths(expert: Callable[[np.ndarray], np.ndarray], env_name: str, n_traj: int, seed: int,
                         ep_len: int | None = None) -> list[Trajectory]:
    """Roll the expert's mean action out for exactly `n_traj` episodes of `env_name` (CS285 format); an
    ExpertPolicy acts through its numpy apply, cheaper per env step than a jitted call."""
    return collect_expert_episodes(expert, env_name, n_traj, seed, ep_len)[0]


def collect_expert_episodes(expert: Callable[[np.ndarray], np.ndarray], env_name: str, n_traj: int, seed: int,
                            ep_len: int | None = None) -> tuple[list[Trajectory], list[bool]]:
    """`collect_expert_paths`, plus whether each episode ended in a termination (not a truncation)."""
    if n_traj <= 0:
        raise BcjaxError(f"the number of expert trajectories must be positive, got {n_traj}")
    with contextlib.closing(make_env(env_name, seed)) as env:
        actor = getattr(expert, "mean_action_np", expert)
        episodes = [sample_trajectory(env, actor, ep_len or env_info(env).max_episode_steps) for _ in range(n_traj)]
    return [path for path, _ in episodes], [terminated for _, terminated in episodes]
