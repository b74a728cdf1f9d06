"""Rollouts: one gymnasium env's episodes, and many seeds' collections or evaluations stepped together.

An actor is any callable mapping a (B, obs_dim) float32 batch to B actions. `sample_streams` steps the
rows of several streams (a seed's collection or evaluation on its n envs) together in one env of rows (a
MuJoCo batch, bcjax.acting.tasks), with one batched policy call per step (`SeedPolicies`). A stream's
episodes depend on its seeds alone, not on its number of rows: each has its own reset and noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium.utils.seeding import np_random

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


class StreamsActor(Protocol):
    """Acts on the rows of K streams (stream k on ns[k] consecutive rows): `begin(rows)` when episodes start on
    `rows` (in launch order), then once per step all rows' actions for their (rows, obs_dim) observations
    (`active`: (K,) streams still running), and which rows the expert drove (None: no mixing)."""

    def begin(self, rows: np.ndarray) -> None: ...

    def __call__(self, obs: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...


class StreamRows:
    """Where K streams' rows are: stream k on ns[k] consecutive rows from first[k]; `of` is each row's stream."""

    def __init__(self, ns: list[int]) -> None:
        self.ns = np.asarray(ns, np.int64)
        self.first = np.concatenate([[0], np.cumsum(self.ns)[:-1]]).astype(np.int64)
        self.of = np.repeat(np.arange(len(ns)), self.ns)
        self.uniform = bool(np.all(self.ns == self.ns[0]))  # (K, n) rows: reshapes, no copies

    def of_stream(self, k: int) -> slice:
        return slice(int(self.first[k]), int(self.first[k] + self.ns[k]))


class _Streams:
    """K streams on their rows: the episode each row records, and per stream the one-env rule of which are kept."""

    def __init__(self, at: StreamRows, min_steps: list[int], ep_len: int) -> None:
        k, rows = len(at.ns), len(at.of)
        self.at, self.min_steps, self.ep_len = at, np.asarray(min_steps, np.int64), ep_len
        self.slot = np.full(rows, -1)  # the episode (of its stream) each row records; -1: none
        self.start = np.zeros(rows, np.int64)
        self.recorded, self.kept_steps, self.kept = np.zeros(k, np.int64), np.zeros(k, np.int64), [0] * k
        self.episodes: list[list[list]] = [[] for _ in range(k)]  # [row, first step, end step, last obs]
        self.results: list[tuple[list[Trajectory], int, int] | None] = [None] * k
        self.active = np.ones(k, bool)
        self.log: list[tuple] = []  # per step: all rows' observations, actions, rewards, expert-driven flags

    def needed(self, rows: np.ndarray) -> np.ndarray:
        # a stream may still need an episode while those launched hold fewer than min_steps steps
        k = self.at.of[rows]
        return rows[self.recorded[k] < self.min_steps[k]]

    def launch(self, rows: np.ndarray, t: int) -> None:
        for i in rows:
            k = self.at.of[i]
            self.slot[i], self.start[i] = len(self.episodes[k]), t
            self.episodes[k].append([i, t, None, None])

    def record(self, t: int, ob: np.ndarray, acs: np.ndarray, rew: np.ndarray, took: np.ndarray | None,
               next_ob: np.ndarray, ended: np.ndarray, live: np.ndarray) -> np.ndarray:
        """Step t of the `live` rows (a mask); returns the rows whose episodes ended (or reached ep_len). Every
        numpy call here is paid each step: the rest runs only when an episode ends."""
        self.log.append((ob, acs, rew, took))
        self.recorded += live if len(live) == len(self.recorded) else np.add.reduceat(live, self.at.first, dtype=np.int64)
        finished = live & (ended | (self.start <= t + 1 - self.ep_len))
        if not finished.any():
            return _NO_ROWS
        rows = finished.nonzero()[0]
        for i in rows:
            self.episodes[self.at.of[i]][self.slot[i]][2:] = [t + 1, np.array(next_ob[i], np.float32)]
        self.slot[rows] = -1
        for k in sorted(set(self.at.of[rows].tolist())):
            self._keep(k)
        return rows

    def _keep(self, k: int) -> None:
        eps = self.episodes[k]
        while self.kept[k] < len(eps) and eps[self.kept[k]][2] is not None and self.kept_steps[k] < self.min_steps[k]:
            self.kept_steps[k] += eps[self.kept[k]][2] - eps[self.kept[k]][1]
            self.kept[k] += 1
        if self.kept_steps[k] >= self.min_steps[k]:
            rows, first = self.at.of_stream(k), self.at.first[k]
            obs, acs, rews = (np.stack([step[j][rows] for step in self.log]) for j in range(3))
            kept = [(i - first, a, b, last) for i, a, b, last in eps[:self.kept[k]]]
            expert_steps = 0
            if self.log[0][3] is not None:  # beta-mixing: the kept steps the expert drove
                took = np.stack([step[3][rows] for step in self.log])
                expert_steps = sum(int(took[a:b, j].sum()) for j, a, b, _ in kept)
            self.results[k] = ([_trajectory(obs[a:b, j], acs[a:b, j], rews[a:b, j], last) for j, a, b, last in kept],
                               int(self.kept_steps[k]), expert_steps)
            self.slot[rows], self.active[k] = -1, False  # its rows are stepped no more


def sample_streams(env: Any, act: StreamsActor, seeds: list[int], ns: list[int], min_steps: list[int], ep_len: int
                   ) -> list[tuple[list[Trajectory], int, int]]:
    """Per stream k (ns[k] consecutive rows of `env`, a BatchEnv or GymEnvs): whole episodes until at least
    `min_steps[k]` (> 0) env steps, those steps, and the steps the expert drove. All streams step together;
    `act` gives every row's action once per step.

    A stream's episodes are those one gymnasium env seeded seeds[k] gives (env.reset(seed=...), then an
    unseeded reset per episode), whatever its rows: episodes are numbered in launch order (row order when
    several rows free up at once), episode j takes the stream's j-th reset and `act`'s j-th episode start, and
    it is kept iff episodes 0..j-1 hold fewer than `min_steps[k]` steps, never in the order they finish, which
    would favour short ones. A row no episode needs any more is not stepped.
    """
    at = StreamRows(ns)
    s, rows = _Streams(at, min_steps, ep_len), np.arange(len(at.of))
    rngs = [np_random(int(seed))[0] for seed in seeds]  # each stream's resets, as reset(seed=...) makes them
    row_rng = lambda ids: [rngs[k] for k in at.of[ids]]  # noqa: E731
    env.reset(at.first, row_rng(at.first))  # reset(seed=...)'s draws; episodes start at the next reset
    ob, t = env.reset(rows, row_rng(rows)), 0
    s.launch(rows, 0)
    act.begin(rows)
    while s.active.any():
        ob32 = np.asarray(ob, np.float32)
        acs, took = act(ob32, s.active)
        mask = s.slot >= 0
        if mask.all():  # every row records a step (no copies)
            next_ob, rew, terminated, truncated = env.step(rows, acs)
            ended = terminated | truncated
        else:
            live = mask.nonzero()[0]
            next_ob, rew, ended = ob.copy(), np.zeros(len(rows)), np.zeros(len(rows), bool)
            if len(live):
                next_ob[live], rew[live], terminated, truncated = env.step(live, acs[live])
                ended[live] = terminated | truncated
        done = s.record(t, ob32, acs, rew, took, next_ob, ended, mask)
        if len(done) and len(done := s.needed(done)):
            next_ob[done] = env.reset(done, row_rng(done))
            s.launch(done, t + 1)
            act.begin(done)
        ob, t = next_ob, t + 1
    return s.results


class SeedPolicies:
    """K seeds' policies of one spec (the student's: no input adapter) on their rows (seed k on ns[k]
    consecutive rows), as one batched forward per step, then each episode's own noise and beta-mixing
    (`mix[k]`: expert, beta, draw generator): per row the expert's action with probability beta.

    An episode draws all its noise (ep_len steps of it) from its seed's generator `rngs[k]` (None: the mean
    action) when it starts, and all its beta draws from the seed's draw generator: episode j of a seed takes
    the j-th block of each, so its actions depend on nothing else (not on its rows, nor on the steps of the
    episodes before it). core.mlp's forward over the stacked params gives each row the bits it gives that row
    alone: the rows go in as (K, max ns, obs_dim), padded where seeds have fewer rows.
    """

    def __init__(self, spec: MLPSpec, params: list[dict], rngs: list[np.random.Generator | None],
                 mix: list[tuple | None], ns: list[int], ep_len: int) -> None:
        nets = [net(spec, p) for p in params]
        col = lambda xs: np.stack(xs)[:, None]  # noqa: E731 - (K, 1, d): broadcast over each seed's rows
        layers = [(np.stack([w for w, _ in ls]), col([b for _, b in ls])) for ls in zip(*[[*m.hidden, m.out] for m in nets])]
        norm = None if nets[0].norm is None else tuple(col(x) for x in zip(*[m.norm for m in nets]))
        self.net = Net(layers[:-1], layers[-1], norm)  # the K seeds' params stacked: one forward for all
        self.spec, self.act, self.rngs, self.mix, self.ep_len = spec, ACTIVATIONS[spec.activation], rngs, mix, ep_len
        self.at = at = StreamRows(ns)
        self.grid = None if at.uniform else (at.of, np.arange(len(at.of)) - at.first[at.of])  # each row's (seed, slot)
        self.std = None if spec.discrete else np.stack([np.exp(p["params"]["log_std"]) for p in params])[at.of]
        rows, noisy = len(at.of), np.array([r is not None for r in rngs])
        self.rows, self.t = np.arange(rows), np.zeros(rows, np.int64)  # each row's step in its episode
        self.noise = None if not noisy.any() else np.zeros((rows, ep_len, spec.act_dim),
                                                           np.float64 if spec.discrete else np.float32)
        self.quiet = None if noisy.all() or not noisy.any() else ~noisy[at.of][:, None]  # rows acting on the mean
        self.mixing = any(m is not None for m in mix)
        self.draws = np.ones((rows, ep_len)) if self.mixing else None  # a seed without mixing: beta 0, never the expert
        self.beta = np.array([0.0 if m is None else m[1] for m in mix])[at.of] if self.mixing else None

    def begin(self, rows: np.ndarray) -> None:
        self.t[rows] = 0
        for i in rows:
            k = self.at.of[i]
            if self.rngs[k] is not None:  # the draws standard_normal((ep_len, act_dim)) gives; gumbel's for logits
                if self.spec.discrete:
                    self.noise[i] = self.rngs[k].gumbel(size=self.noise.shape[1:])
                else:
                    self.rngs[k].standard_normal(dtype=np.float32, out=self.noise[i])
            if self.mix[k] is not None:
                _, _, draws = self.mix[k]
                self.draws[i] = draws.random(self.ep_len)

    def _forward(self, obs: np.ndarray) -> np.ndarray:
        k = len(self.at.ns)
        if self.grid is None:
            return forward(self.spec, self.net, obs.reshape(k, -1, obs.shape[-1]), self.act).reshape(len(obs), -1)
        grid = np.zeros((k, int(self.at.ns.max()), obs.shape[-1]), obs.dtype)
        grid[self.grid] = obs
        return forward(self.spec, self.net, grid, self.act)[self.grid]

    def __call__(self, obs: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = self._forward(obs)
        t = np.minimum(self.t, self.ep_len - 1)  # a row past its episode's end idles: its action is not used
        self.t += 1
        if self.noise is not None:
            noise = self.noise[self.rows, t]
            noisy = out + (noise if self.spec.discrete else self.std * noise)
            out = noisy if self.quiet is None else np.where(self.quiet, out, noisy)
        acs = np.argmax(out, axis=-1) if self.spec.discrete else out
        if not self.mixing:
            return acs, None
        took = self.draws[self.rows, t] < self.beta
        for k in active.nonzero()[0]:
            rows = self.at.of_stream(k)
            take = took[rows]
            if self.mix[k] is not None and take.any():
                expert, _, _ = self.mix[k]
                acs[rows][take] = np.asarray(expert(obs[rows][take]), acs.dtype)
        return acs, took


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
