"""CS285 trajectories: the fields every source of expert data must give, checked."""

from __future__ import annotations

import numpy as np

from bcjax.data.safe_pickle import as_array, finite
from bcjax.errors import BcjaxError

Trajectory = dict[str, np.ndarray]

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
        if missing := [k for k in REQUIRED_KEYS if k not in traj]:
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
