"""Observation adapters between task versions, so an expert made on one version serves another.

An expert's input is the observation layout of the task version it was trained on. The CS285
experts (and bcjax's bundled ones) were made on the v4 MuJoCo tasks (the CS285 Ant on a 111-dim
Ant whose last 84 inputs were contact forces, zero in the MuJoCo of its day, which the homework
pads with zeros on Ant-v4). gymnasium's v5 tasks keep the layout for Hopper, HalfCheetah,
Walker2d, Swimmer and the pendulums, but change it for Ant and Humanoid: each such task has an
explicit map to the v4 layout here, checked against the v4 env in the tests, never a silent pad.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

ObsMap = Callable[..., Any]  # (obs, xp=numpy) -> obs in the v4 layout; xp=jax.numpy inside the JAX apply


def _ant_v5_to_v4(obs: Any, xp: Any = np) -> Any:
    # v5: qpos[2:] (13), qvel (14), cfrc_ext of the 13 non-world bodies (78); v4 without contact forces: the first 27.
    return obs[..., :27]


def _humanoid_v5_to_v4(obs: Any, xp: Any = np) -> Any:
    # v5 drops the world body's rows (all zero in v4) from cinert (10), cvel (6) and cfrc_ext (6), and the
    # free joint's 6 unactuated dofs (zero) from qfrc_actuator: put the zeros back.
    z = xp.zeros((*obs.shape[:-1], 10), obs.dtype)
    parts = [obs[..., :45], z, obs[..., 45:175], z[..., :6], obs[..., 175:253], z[..., :6], obs[..., 253:270],
             z[..., :6], obs[..., 270:348]]
    return xp.concatenate(parts, axis=-1)


# task -> (the version whose layout the map gives, its obs size there, the map, what it does)
ADAPTERS: dict[str, tuple[str, int, ObsMap, str]] = {
    "Ant-v5": ("Ant-v4", 27, _ant_v5_to_v4, "the 78 contact-force entries dropped"),
    "Humanoid-v5": ("Humanoid-v4", 376, _humanoid_v5_to_v4, "the world body's and the root joint's zero rows put back"),
}

# v5 tasks whose observation layout is v4's, entry for entry (checked in the tests).
SAME_AS_V4 = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Swimmer-v5", "InvertedPendulum-v5",
              "InvertedDoublePendulum-v5", "Reacher-v5", "Pusher-v5")


def v4_task(env_name: str) -> str | None:
    """The v4 task whose experts serve `env_name` (itself for a v4 task), or None."""
    if env_name.endswith("-v4"):
        return env_name
    if env_name in ADAPTERS:
        return ADAPTERS[env_name][0]
    if env_name in SAME_AS_V4:
        return env_name[:-1] + "4"
    return None


def obs_map(env_name: str) -> ObsMap | None:
    """The map from `env_name`'s observations to the v4 layout, or None where they are the same."""
    entry = ADAPTERS.get(env_name)
    return entry[2] if entry else None


def describe_input(env_name: str, env_obs_dim: int, expert_obs_dim: int) -> str | None:
    """What happens between the task's observation and the expert's input, for the log (None: nothing)."""
    steps = []
    d = env_obs_dim
    if env_name in ADAPTERS:
        target, d, _, what = ADAPTERS[env_name]
        steps.append(f"{env_name}'s {env_obs_dim}-dim observations mapped to the {target} layout ({what})")
    if d < expert_obs_dim:
        steps.append(f"padded with {expert_obs_dim - d} zeros to the expert's {expert_obs_dim} inputs, as the homework does")
    elif d > expert_obs_dim:
        steps.append(f"truncated from {d} to the expert's first {expert_obs_dim} inputs, as the homework does")
    return "; ".join(steps) or None
