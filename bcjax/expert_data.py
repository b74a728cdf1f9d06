"""CS285 expert data: a pickled list of trajectory dicts (or a Minari dataset, see `minari_data`)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

from bcjax.atomic_file import write_atomic
from bcjax.envs import EnvInfo
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


def check_trajectory_count(n_traj: int | None, available: int, where: str) -> None:
    """`--expert_data_trajectories` may ask for at most what the data holds."""
    if n_traj is not None and n_traj > available:
        raise BcjaxError(f"--expert_data_trajectories {n_traj} but {where} holds {available} trajectories: "
                         f"pass at most {available}, or collect more with scripts/collect_expert_data.py --n_traj")


def load_expert_data(source: str | Path, flag: str = "--expert_data", n_traj: int | None = None,
                     info: EnvInfo | None = None) -> list[Trajectory]:
    """The first `n_traj` (default all) trajectories of CS285 expert data (restricted unpickler), or of
    a Minari dataset (`minari:DATASET_ID` or its directory; `info` checks its spaces against the task)."""
    from bcjax.minari_data import is_minari_source, load_minari

    if is_minari_source(source):
        return load_minari(str(source), n_traj, info)
    paths = validate_paths(load_pickle(source, "expert data", flag), f"expert data {source}")
    check_trajectory_count(n_traj, len(paths), f"expert data {source}")
    return paths[:n_traj]


def save_expert_data(paths: list[Trajectory], path: str | Path) -> None:
    """Write trajectories in the CS285 expert-data format (atomically, through a unique temporary name)."""
    write_atomic(path, pickle.dumps([{k: np.asarray(v) for k, v in p.items()} for p in paths]))


def collect_expert_paths(expert: Callable[[np.ndarray], np.ndarray], env_name: str, n_traj: int, seed: int,
                         ep_len: int | None = None) -> list[Trajectory]:
    """Roll the expert's mean action out for exactly `n_traj` episodes of `env_name` (CS285 format)."""
    return collect_expert_episodes(expert, env_name, n_traj, seed, ep_len)[0]


class _EpisodeEnds(gym.Wrapper):
    """Records, per episode, whether the env terminated it (else it was truncated, by the
    env's time limit or at ep_len): CS285 trajectories keep only `terminal`, Minari needs both."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.terminated: list[bool] = []

    def reset(self, **kwargs: object) -> tuple:
        self.terminated.append(False)
        return self.env.reset(**kwargs)

    def step(self, action: np.ndarray) -> tuple:
        out = self.env.step(action)
        self.terminated[-1] = bool(out[2])
        return out


def collect_expert_episodes(expert: Callable[[np.ndarray], np.ndarray], env_name: str, n_traj: int, seed: int,
                            ep_len: int | None = None) -> tuple[list[Trajectory], list[bool]]:
    """`collect_expert_paths`, plus whether each episode ended in a termination (not a truncation)."""
    from bcjax.envs import env_info, make_env
    from bcjax.rollout import sample_n_trajectories

    if n_traj <= 0:
        raise BcjaxError(f"the number of expert trajectories must be positive, got {n_traj}")
    env = _EpisodeEnds(make_env(env_name, seed))  # wrapped after make_env's seeding reset
    try:
        paths = sample_n_trajectories(env, expert, n_traj, ep_len or env_info(env).max_episode_steps)
        return paths, env.terminated
    finally:
        env.close()
