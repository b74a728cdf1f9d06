"""Rollouts: one gymnasium env's episodes, and many seeds' collections or evaluations stepped together.

An actor is any callable mapping a (B, obs_dim) float32 batch to B actions. `sample_streams` steps the
rows of several streams (a seed's collection or evaluation on its n envs) together in one env of rows (a
MuJoCo batch, bcjax.acting.tasks), with one batched policy call per step (`SeedPolicies`); each stream's
episodes are those gymnasium's env (n = 1) or vector env (n > 1) gives from the same seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from bcjax.core.mlp import ACTIVATIONS, MLPSpec, Net, forward, net

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


def sample_trajectory(env: gym.Env, actor: Actor, ep_len: int) -> tuple[Trajectory, bool]:
    """Run one episode until terminated, truncated or `ep_len` steps; terminal is 1 on its last step. Also
    whether the env terminated it (else it was truncated or cut at ep_len): Minari keeps that, CS285 does not."""
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
    return _trajectory(obs, acs, rews, ob), bool(terminated)


def sample_n_trajectories(env: gym.Env, actor: Actor, n: int, ep_len: int) -> list[Trajectory]:
    """Exactly `n` episodes."""
    return [sample_trajectory(env, actor, ep_len)[0] for _ in range(n)]


_NO_ROWS = np.zeros(0, np.int64)
StreamsActor = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (K, n, obs_dim) obs, (K,) active -> (K, n, ...)


class _Streams:
    """K streams of n rows: the episode each row records, and per stream the one-env rule of which are kept."""

    def __init__(self, k: int, n: int, min_steps: int, ep_len: int) -> None:
        self.n, self.min_steps, self.ep_len = n, min_steps, ep_len
        self.slot = np.full(k * n, -1)  # the episode (of its stream) each row records; -1: none
        self.start = np.zeros(k * n, np.int64)
        self.recorded, self.kept_steps, self.kept = np.zeros(k, np.int64), np.zeros(k, np.int64), [0] * k
        self.episodes: list[list[list]] = [[] for _ in range(k)]  # [row, first step, end step, last obs]
        self.results: list[tuple[list[Trajectory], int] | None] = [None] * k
        self.active = np.ones(k, bool)
        self.log: list[tuple] = []  # per step: all rows' observations, actions, rewards

    def launch(self, rows: np.ndarray, t: int) -> None:
        # Only while it may still be needed: the stream's launched episodes hold fewer than min_steps steps.
        for i in rows[self.recorded[rows // self.n] < self.min_steps]:
            self.slot[i], self.start[i] = len(self.episodes[i // self.n]), t
            self.episodes[i // self.n].append([i, t, None, None])

    def record(self, t: int, ob: np.ndarray, acs: np.ndarray, rew: np.ndarray, next_ob: np.ndarray,
               ended: np.ndarray, live: np.ndarray) -> np.ndarray:
        """Step t of the `live` rows (a mask); returns the rows to reset at once: episodes cut at ep_len, with one
        env every ended one. Every numpy call here is paid each step: the rest runs only when an episode ends."""
        self.log.append((ob, acs, rew))
        self.recorded += live if self.n == 1 else np.add.reduce(live.reshape(-1, self.n), axis=1)
        finished = live & (ended | (self.start <= t + 1 - self.ep_len))
        if not finished.any():
            return _NO_ROWS
        rows = finished.nonzero()[0]
        for i in rows:
            self.episodes[i // self.n][self.slot[i]][2:] = [t + 1, np.array(next_ob[i], np.float32)]
        self.slot[rows] = -1
        for k in set(rows // self.n):
            self._keep(k)
        return rows if self.n == 1 else rows[~ended[rows]]

    def _keep(self, k: int) -> None:
        eps = self.episodes[k]
        while self.kept[k] < len(eps) and eps[self.kept[k]][2] is not None and self.kept_steps[k] < self.min_steps:
            self.kept_steps[k] += eps[self.kept[k]][2] - eps[self.kept[k]][1]
            self.kept[k] += 1
        if self.kept_steps[k] >= self.min_steps:
            rows = slice(k * self.n, (k + 1) * self.n)
            obs, acs, rews = (np.stack([step[j][rows] for step in self.log]) for j in range(3))
            self.results[k] = ([_trajectory(obs[a:b, i % self.n], acs[a:b, i % self.n], rews[a:b, i % self.n], last)
                                for i, a, b, last in eps[:self.kept[k]]], int(self.recorded[k]))
            self.slot[rows], self.active[k] = -1, False  # its rows are stepped no more


def sample_streams(env: Any, act: StreamsActor, seeds: list[int], n: int, min_steps: int, ep_len: int,
                   stop: Callable[[], bool] | None = None) -> list[tuple[list[Trajectory], int]]:
    """Per stream k (rows k*n to k*n+n-1 of `env`, a BatchEnv or GymEnvs, seeded seeds[k] + i): whole
    episodes until at least `min_steps` env steps, and the env steps taken, as gymnasium's env (n = 1) or
    vector env with next-step autoreset (n > 1) gives them. All streams step together; `act` gives every
    row's action once per step.

    Episodes are numbered in launch order (row order when several rows free up at once) and episode j is
    kept iff episodes 0..j-1 hold fewer than `min_steps` steps, never in the order they finish, which would
    favour short ones. A stream is acted on for all its n rows every step, also those idle or autoresetting,
    as the vector env is; an idle row is one no episode needs any more, and it is not stepped.
    """
    k = len(seeds)
    if min_steps <= 0:
        return [([], 0) for _ in range(k)]
    s, rows = _Streams(k, n, min_steps, ep_len), np.arange(k * n)
    env.reset(rows, [seed + i for seed in seeds for i in range(n)])  # reset(seed=...); episodes start at the next
    ob, resetting, t = env.reset(rows), np.zeros(k * n, bool), 0
    s.launch(rows, 0)
    while s.active.any():
        if stop is not None and stop():
            raise InterruptedError("rollouts stopped")
        ob32 = np.asarray(ob, np.float32)
        acs = act(ob32.reshape(k, n, -1), s.active)
        acs = acs.reshape(k * n, *acs.shape[2:])
        mask = s.slot >= 0
        live = rows if mask.all() else mask.nonzero()[0]
        reset = (resetting & np.repeat(s.active, n)).nonzero()[0] if n > 1 and resetting.any() else _NO_ROWS
        if len(live) == k * n:  # every row records a step (no copies)
            next_ob, rew, terminated, truncated = env.step(live, acs)
            ended = terminated | truncated
        else:
            next_ob, rew, ended = ob.copy(), np.zeros(k * n), np.zeros(k * n, bool)
            if len(live):
                next_ob[live], rew[live], terminated, truncated = env.step(live, acs[live])
                ended[live] = terminated | truncated
            if len(reset):  # the autoreset step of the rows an episode ended on: reward 0, not recorded
                next_ob[reset] = env.reset(reset)
        at_once = s.record(t, ob32, acs, rew, next_ob, ended, mask)
        if len(reset):
            s.launch(reset, t + 1)  # their episodes start from next_ob
        resetting = ended
        if len(at_once) and len(at_once := at_once[s.recorded[at_once // n] < min_steps]):
            next_ob[at_once] = env.reset(at_once)
            s.launch(at_once, t + 1)
        ob, t = next_ob, t + 1
    return s.results


class SeedPolicies:
    """K seeds' policies of one spec (the student's: no input adapter) as one batched forward per step, then
    each seed's own noise (as its NumpyMLP draws it) and beta-mixing (`mix[k]`: expert, beta, draw generator):
    per row the expert's action with probability beta; `expert_steps[k]` counts the rows the expert drove.

    core.mlp's forward over the stacked params gives each seed's rows the bits it gives them alone; the noise is added
    to all seeds at once; the draws, and an expert's call on the rows it drives, stay per seed. The policy acts
    on every row, so its noise stream does not depend on the draws.
    """

    def __init__(self, spec: MLPSpec, params: list[dict], rngs: list[np.random.Generator | None],
                 mix: list[tuple | None]) -> None:
        nets = [net(spec, p) for p in params]
        col = lambda xs: np.stack(xs)[:, None]  # noqa: E731 - (K, 1, d): broadcast over each seed's rows
        layers = [(np.stack([w for w, _ in ls]), col([b for _, b in ls])) for ls in zip(*[[*m.hidden, m.out] for m in nets])]
        norm = None if nets[0].norm is None else tuple(col(x) for x in zip(*[m.norm for m in nets]))
        self.net = Net(layers[:-1], layers[-1], norm)  # the K seeds' params stacked: one forward for all
        self.spec, self.act, self.rngs, self.acs = spec, ACTIVATIONS[spec.activation], rngs, None
        self.std = None if spec.discrete else col([np.exp(p["params"]["log_std"]) for p in params])
        self.mix, self.expert_steps = mix, [0] * len(mix)
        self.mixing = any(m is not None for m in mix)

    def __call__(self, obs: np.ndarray, active: np.ndarray) -> np.ndarray:
        out = forward(self.spec, self.net, obs, self.act)
        acting = active.nonzero()[0]
        if self.rngs[0] is not None:
            noise = np.zeros(out.shape, np.float64 if self.spec.discrete else np.float32)
            for k in acting:  # drawn in place: the draws standard_normal(shape) gives
                if self.spec.discrete:
                    noise[k] = self.rngs[k].gumbel(size=out.shape[1:])
                else:
                    self.rngs[k].standard_normal(dtype=np.float32, out=noise[k])
            out = out + (noise if self.spec.discrete else self.std * noise)
        self.acs = np.argmax(out, axis=-1) if self.spec.discrete else out
        for k in acting if self.mixing else ():
            if self.mix[k] is not None:
                expert, beta, draws = self.mix[k]
                take = draws.random(obs.shape[1]) < beta
                if take.any():
                    self.acs[k][take] = np.asarray(expert(obs[k][take]), self.acs.dtype)
                self.expert_steps[k] += int(take.sum())
        return self.acs


def beta_at(schedule: str, itr: int, beta0: float = 1.0, decay: float = 1.0, iters: int = 1) -> float:
    """DAgger's expert-mixing probability at iteration `itr`: linear max(0, 1 - itr / iters),
    exponential beta0 * decay**itr, none 0 (the homework: the policy always acts)."""
    if schedule == "linear":
        return max(0.0, 1.0 - itr / iters)
    if schedule == "exponential":
        return beta0 * decay**itr
    return 0.0


def episode_stats(paths: list[Trajectory], prefix: str) -> dict[str, float]:
    """CS285 return/length statistics of a list of trajectories."""
    returns = np.array([p["reward"].sum() for p in paths], np.float64)
    stats = {f"{prefix}_{name}Return": float(f(returns)) for name, f in
             (("Average", np.mean), ("Std", np.std), ("Max", np.max), ("Min", np.min))}
    return {**stats, f"{prefix}_AverageEpLen": float(np.mean([len(p["reward"]) for p in paths], dtype=np.float64))}
