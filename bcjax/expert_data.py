"""CS285 expert data: a pickled list of trajectory dicts."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bcjax.atomic_file import write_atomic
from bcjax.errors import BcjaxError
from bcjax.rollout import Trajectory
from bcjax.safe_pickle import as_array, finite, load_pickle

REQUIRED_KEYS = ("observation", "action", "reward", "next_observation", "terminal")
# Dimensions of each field: (T, obs_dim); (T, act_dim) or (T,) for discrete actions; (T,).
_NDIM = {"observation": 2, "next_observation": 2, "action": (1, 2), "reward": 1, "terminal": 1}


def validate_paths(data: object, where: str) -> list[Trajectory]:
    """Check a list of CS285 trajectory dicts and return copies with consistent lengths."""
    if not isinstance(data, list) or not data:
        raise BcjaxError(f"{where} is not CS285 expert data: expected a non-empty list of trajectory dicts")
    paths = []
    for i, traj in enumerate(data):
        if not isinstance(traj, dict):
            raise BcjaxError(f"{where}: trajectory {i} is a {type(traj).__name__}, expected a dict")
        missing = [k for k in REQUIRED_KEYS if k not in traj]
        if missing:
            raise BcjaxError(f"{where}: trajectory {i} lacks {', '.join(missing)} (CS285 expert data has {', '.join(REQUIRED_KEYS)})")
        # Shapes first: len() of a 0-d array raises, and a bad shape would fail deep inside the buffer.
        path = {k: finite(as_array(traj[k], f"{where}: trajectory {i} '{k}'", _NDIM[k]), f"{where}: trajectory {i} '{k}'")
                for k in REQUIRED_KEYS}
        path["image_obs"] = np.zeros((0,), np.uint8)  # never used for training; not copied from untrusted input
        n = len(path["observation"])
        if n == 0 or any(len(path[k]) != n for k in REQUIRED_KEYS):
            raise BcjaxError(f"{where}: trajectory {i} has arrays of different or zero lengths")
        if path["next_observation"].shape != path["observation"].shape:
            raise BcjaxError(f"{where}: trajectory {i} observations should be (T, obs_dim)")
        paths.append(path)
    dims = {p["observation"].shape[1] for p in paths}
    if len(dims) != 1:
        raise BcjaxError(f"{where}: trajectories have different observation sizes {sorted(dims)}")
    return paths


def load_expert_data(path: str | Path, flag: str = "--expert_data") -> list[Trajectory]:
    """Load CS285 expert data (restricted unpickler) and validate its structure."""
    return validate_paths(load_pickle(path, "expert data", flag), f"expert data {path}")


def save_expert_data(paths: list[Trajectory], path: str | Path) -> None:
    """Write trajectories in the CS285 expert-data format (atomically, through a unique temporary name)."""
    write_atomic(path, pickle.dumps([{k: np.asarray(v) for k, v in p.items()} for p in paths]))


def collect_expert_paths(expert: Callable[[np.ndarray], np.ndarray], env_name: str, n_traj: int, seed: int,
                         ep_len: int | None = None) -> list[Trajectory]:
    """Roll the expert's mean action out for exactly `n_traj` episodes of `env_name` (CS285 format)."""
    from bcjax.envs import env_info, make_env
    from bcjax.rollout import sample_n_trajectories

    if n_traj <= 0:
        raise BcjaxError(f"the number of expert trajectories must be positive, got {n_traj}")
    env = make_env(env_name, seed)
    try:
        return sample_n_trajectories(env, expert, n_traj, ep_len or env_info(env).max_episode_steps)
    finally:
        env.close()
