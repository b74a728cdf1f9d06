"""Python-side gymnasium rollouts: one trajectory, at least N steps, exactly N trajectories.

An actor is any callable mapping a (B, obs_dim) float32 batch to B actions; a
single env calls it with B = 1, a vector env of N copies with B = N (one
batched call per vector step).
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

Trajectory = dict[str, np.ndarray]
Actor = Callable[[np.ndarray], np.ndarray]


def _trajectory(obs: list, acs: list, rews: list, last_ob: np.ndarray) -> Trajectory:
    """Arrays of one finished episode; next_observation is observation shifted by one, ending in `last_ob`."""
    observation = np.asarray(obs, np.float32)
    terminal = np.zeros(len(obs), np.float32)
    terminal[-1] = 1
    return {
        "observation": observation,
        "action": np.asarray(acs),
        "reward": np.asarray(rews, np.float32),
        "next_observation": np.concatenate([observation[1:], np.asarray(last_ob, np.float32)[None]]),
        "terminal": terminal,
        "image_obs": np.zeros((0,), np.uint8),  # the CS285 field; videos are rendered by bcjax.acting.video
    }


def sample_trajectory(env: gym.Env, actor: Actor, ep_len: int) -> Trajectory:
    """Run one episode until terminated, truncated or `ep_len` steps; terminal is 1 on its last step."""
    ob, _ = env.reset()
    obs, acs, rews = [], [], []
    # The loop body is all the per-step overhead a rollout adds to env.step: keep it this small.
    for _ in range(ep_len):
        ob32 = np.asarray(ob, np.float32)
        ac = actor(ob32[None])[0]
        ob, rew, terminated, truncated, _ = env.step(ac)
        obs.append(ob32)
        acs.append(ac)
        rews.append(rew)
        if terminated or truncated:
            break
    return _trajectory(obs, acs, rews, ob)


def sample_trajectories(env: gym.Env | gym.vector.VectorEnv, actor: Actor, min_steps: int,
                        ep_len: int) -> tuple[list[Trajectory], int]:
    """Whole episodes until at least `min_steps` env steps; returns them and the env steps taken (with a
    vector env, also those of the episodes launched and then dropped).

    Episode j is kept iff episodes 0..j-1 hold fewer than `min_steps` steps; a
    vector env keeps exactly the same episodes by that rule (see `_sample_vector`).
    """
    if isinstance(env, gym.vector.VectorEnv):
        return _sample_vector(env, actor, min_steps, ep_len)
    paths, steps = [], 0
    while steps < min_steps:
        paths.append(sample_trajectory(env, actor, ep_len))
        steps += len(paths[-1]["reward"])
    return paths, steps


class _Episode:
    __slots__ = ("acs", "last_ob", "obs", "rews")

    def __init__(self) -> None:
        self.obs: list[np.ndarray] = []
        self.acs: list[np.ndarray] = []
        self.rews: list[float] = []
        self.last_ob: np.ndarray | None = None  # set when the episode ends


def _sample_vector(venv: gym.vector.VectorEnv, actor: Actor, min_steps: int, ep_len: int) -> tuple[list[Trajectory], int]:
    """`sample_trajectories` on N envs stepped together, one batched actor call per vector step.

    Episodes are numbered in launch order (env index order when several envs
    free up at once) and kept by the one-env rule in that order, never in the
    order they finish, which would favour short episodes. A freed env starts a
    new episode only while it may still be needed, i.e. while all launched
    episodes together hold fewer than `min_steps` steps (a lower bound on the
    steps before any later episode); sampling stops as soon as the kept
    episodes have all finished, and the rest are dropped.
    """
    mode = venv.metadata.get("autoreset_mode")
    if mode != gym.vector.AutoresetMode.NEXT_STEP:
        raise ValueError(f"vector rollouts expect gymnasium's next-step autoreset, got autoreset_mode={mode}")
    if min_steps <= 0:
        return [], 0
    n = venv.num_envs
    episodes: list[_Episode] = []
    slots: list[_Episode | None] = [None] * n  # the episode each env is recording; None: idle
    recorded = 0  # steps recorded by all launched episodes
    kept, kept_steps = 0, 0  # episodes[:kept] are finished and kept; they hold kept_steps steps

    def launch(envs: np.ndarray) -> None:
        for i in envs:
            if recorded < min_steps:
                slots[i] = _Episode()
                episodes.append(slots[i])

    ob, _ = venv.reset()
    launch(np.arange(n))
    resetting = np.zeros(n, bool)  # envs whose next step is an autoreset
    while True:
        ob32 = np.array(ob, np.float32)
        acs = actor(ob32)
        next_ob, rew, terminated, truncated, _ = venv.step(acs)
        ended = terminated | truncated
        capped = np.zeros(n, bool)  # episodes cut at ep_len that the env itself did not end
        for i in range(n):
            ep = slots[i]
            if ep is None:  # idle, or autoresetting: this step's obs starts an episode
                continue
            ep.obs.append(ob32[i])
            ep.acs.append(acs[i])
            ep.rews.append(rew[i])
            recorded += 1
            if ended[i] or len(ep.rews) >= ep_len:
                ep.last_ob = np.array(next_ob[i], np.float32)
                slots[i] = None
                capped[i] = not ended[i]
        while kept < len(episodes) and episodes[kept].last_ob is not None and kept_steps < min_steps:
            kept_steps += len(episodes[kept].rews)
            kept += 1
        if kept_steps >= min_steps:
            return [_trajectory(e.obs, e.acs, e.rews, e.last_ob) for e in episodes[:kept]], recorded
        # Envs freed by an autoreset this step start their episode from next_ob; capped ones need a reset.
        launch(np.flatnonzero(resetting))
        if capped.any() and recorded < min_steps:
            next_ob, _ = venv.reset(options={"reset_mask": capped})
            launch(np.flatnonzero(capped))
        resetting = ended
        ob = next_ob


def sample_n_trajectories(env: gym.Env, actor: Actor, n: int, ep_len: int) -> list[Trajectory]:
    """Exactly `n` episodes."""
    return [sample_trajectory(env, actor, ep_len) for _ in range(n)]


def beta_at(schedule: str, itr: int, beta0: float = 1.0, decay: float = 1.0, iters: int = 1) -> float:
    """DAgger's expert-mixing probability at iteration `itr`: linear max(0, 1 - itr / iters),
    exponential beta0 * decay**itr, none 0 (the homework: the policy always acts)."""
    if schedule == "linear":
        return max(0.0, 1.0 - itr / iters)
    if schedule == "exponential":
        return beta0 * decay**itr
    return 0.0


class MixedActor:
    """Per row of each batch, the expert's action with probability `beta`, else the policy's.

    The policy is called on every batch, so its noise stream does not depend on the draws;
    `steps` and `expert_steps` count the rows acted on and those the expert drove.
    """

    def __init__(self, policy: Actor, expert: Actor, beta: float, rng: np.random.Generator) -> None:
        self.policy, self.expert, self.beta, self.rng = policy, expert, beta, rng
        self.steps = self.expert_steps = 0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        acs = self.policy(obs)
        take = self.rng.random(len(obs)) < self.beta
        if take.any():
            acs = np.array(acs)
            acs[take] = np.asarray(self.expert(obs[take]), acs.dtype)
        self.steps += len(obs)
        self.expert_steps += int(take.sum())
        return acs


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
