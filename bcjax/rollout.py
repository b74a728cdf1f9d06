"""Python-side gymnasium rollouts: one trajectory, at least N steps, exactly N trajectories.

An actor is any callable mapping a (B, obs_dim) float32 batch to B actions; a
single env calls it with B = 1.
"""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np

Trajectory = dict[str, np.ndarray]
Actor = Callable[[np.ndarray], np.ndarray]


def sample_trajectory(env: gym.Env, actor: Actor, ep_len: int, render: bool = False) -> Trajectory:
    """Run one episode until terminated, truncated or `ep_len` steps; terminal is 1 on its last step."""
    ob, _ = env.reset()
    obs, acs, rews, next_obs, terminals, frames = [], [], [], [], [], []
    while True:
        if render:
            frames.append(env.render())
        ob32 = np.asarray(ob, np.float32)
        ac = actor(ob32[None])[0]
        next_ob, rew, terminated, truncated, _ = env.step(ac)
        obs.append(ob32)
        acs.append(ac)
        rews.append(rew)
        next_obs.append(next_ob)
        done = terminated or truncated or len(obs) >= ep_len
        terminals.append(done)
        ob = next_ob
        if done:
            break
    return {
        "observation": np.asarray(obs, np.float32),
        "action": np.asarray(acs),
        "reward": np.asarray(rews, np.float32),
        "next_observation": np.asarray(next_obs, np.float32),
        "terminal": np.asarray(terminals, np.float32),
        "image_obs": np.asarray(frames, np.uint8) if frames else np.zeros((0,), np.uint8),
    }


def sample_trajectories(env: gym.Env, actor: Actor, min_steps: int, ep_len: int) -> tuple[list[Trajectory], int]:
    """Whole episodes until at least `min_steps` env steps; returns them and the step count."""
    paths, steps = [], 0
    while steps < min_steps:
        paths.append(sample_trajectory(env, actor, ep_len))
        steps += len(paths[-1]["reward"])
    return paths, steps


def sample_n_trajectories(env: gym.Env, actor: Actor, n: int, ep_len: int, render: bool = False) -> list[Trajectory]:
    """Exactly `n` episodes (used for video)."""
    return [sample_trajectory(env, actor, ep_len, render) for _ in range(n)]


def episode_stats(paths: list[Trajectory], prefix: str) -> dict[str, float]:
    """CS285 return/length statistics of a list of trajectories."""
    returns = np.array([p["reward"].sum() for p in paths], np.float64)
    lengths = np.array([len(p["reward"]) for p in paths], np.float64)
    return {
        f"{prefix}_AverageReturn": float(returns.mean()),
        f"{prefix}_StdReturn": float(returns.std()),
        f"{prefix}_MaxReturn": float(returns.max()),
        f"{prefix}_MinReturn": float(returns.min()),
        f"{prefix}_AverageEpLen": float(lengths.mean()),
    }
