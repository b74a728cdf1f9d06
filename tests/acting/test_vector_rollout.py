"""Streams of n envs keep exactly the episodes one env would, in launch order, and exactly those gymnasium's own
env (n = 1) or vector env (n > 1) gave the pool's rollouts before the batch."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

from bcjax.acting.envs import GymEnvs, make_env
from bcjax.acting.rollout import SeedPolicies, _trajectory, sample_streams, sample_trajectory
from bcjax.acting.runner import Mixing, RolloutTask, make_rows, run_tasks
from bcjax.core.mlp import MLPSpec, NumpyMLP

LENGTHS = [3, 1, 7, 2, 5, 4, 6, 1, 9, 2, 2, 8, 3, 5, 1, 6, 4, 7, 2, 3] * 5


class Countdown(gym.Env):
    """Episode k (k-th unseeded reset over all copies sharing `counter`) lasts LENGTHS[k] steps.

    The observation is (k, t); the reward echoes the action, so a misaligned row shows. A seeded reset (a
    rollout's first, whose episode is never recorded) starts no numbered episode.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def __init__(self, counter: itertools.count):
        self.counter = counter
        self.k = self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.k, self.t = (-1 if seed is not None else next(self.counter)), 0
        return np.array([self.k, 0], np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.array([self.k, self.t], np.float32)
        return obs, float(action[0]) + 0.5, self.t >= LENGTHS[self.k], False, {}


def echo_actor(obs: np.ndarray) -> np.ndarray:
    """A deterministic 'policy': action = 100 k + t."""
    return (100 * obs[:, :1] + obs[:, 1:2]).astype(np.float32)


def countdowns(n: int, max_steps: int | None = None) -> GymEnvs:
    counter = itertools.count()  # one launch numbering for all copies, as one env would have
    envs = [Countdown(counter) for _ in range(n)]
    return GymEnvs(envs if max_steps is None else [gym.wrappers.TimeLimit(e, max_steps) for e in envs])


def sample(env, actor, n: int, min_steps: int, ep_len: int, seed: int = 0):
    """One stream driven by `actor` (sample_streams takes one function acting on all streams' rows)."""
    return sample_streams(env, lambda obs, active: np.asarray(actor(obs[0]))[None], [seed], n, min_steps, ep_len)[0]


def assert_same_paths(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for key in ("observation", "action", "reward", "next_observation", "terminal"):
            np.testing.assert_array_equal(g[key], w[key], err_msg=key)
            assert g[key].dtype == w[key].dtype, key


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("min_steps", [1, 4, 10, 17, 41])
@pytest.mark.parametrize("ep_len,max_steps", [(1000, None), (4, None), (1000, 5)])
def test_vector_keeps_the_single_env_episodes(n, min_steps, ep_len, max_steps):
    want, want_steps = sample(countdowns(1, max_steps), echo_actor, 1, min_steps, ep_len)
    got, got_steps = sample(countdowns(n, max_steps), echo_actor, n, min_steps, ep_len)
    assert_same_paths(got, want)
    # the same episodes kept; the steps taken also count the episodes launched and then dropped
    assert got_steps >= want_steps == sum(len(p["reward"]) for p in got)


def test_episodes_by_hand():
    # LENGTHS start 3, 1, 7, 2: 3 + 1 < 5, so episodes 0, 1, 2 are kept and the short 3 is not.
    paths, steps = sample(countdowns(4), echo_actor, 4, 5, 1000)
    assert [len(p["reward"]) for p in paths] == [3, 1, 7]
    assert steps > 11  # 11 kept, plus the steps of the episode launched and dropped
    p = paths[0]
    np.testing.assert_array_equal(p["observation"], [[0, 0], [0, 1], [0, 2]])
    np.testing.assert_array_equal(p["next_observation"], [[0, 1], [0, 2], [0, 3]])
    np.testing.assert_array_equal(p["action"][:, 0], [0, 1, 2])
    np.testing.assert_array_equal(p["reward"], [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(p["terminal"], [0, 0, 1])


def test_one_actor_call_per_step_on_all_rows_of_its_stream():
    batches = []

    def actor(obs):
        batches.append(obs.shape)
        return echo_actor(obs)

    sample(countdowns(3), actor, 3, 20, 1000)
    assert set(batches) == {(3, 2)}


def test_hopper_returns_lengths_and_flags():
    # RecordEpisodeStatistics sees every episode each copy ran: the kept ones must be among them, exactly.
    envs = GymEnvs([gym.wrappers.RecordEpisodeStatistics(make_env("Hopper-v4")) for _ in range(3)])
    rng = np.random.default_rng(0)
    paths, steps = sample(envs, lambda obs: rng.uniform(-1, 1, (len(obs), 3)).astype(np.float32), 3, 300, 1000)
    lengths = [len(p["reward"]) for p in paths]
    assert sum(lengths[:-1]) < 300 <= sum(lengths) <= steps
    seen = {(n, round(r, 4)) for e in envs.envs for n, r in zip(e.length_queue, e.return_queue)}
    for p in paths:
        assert (len(p["reward"]), round(float(p["reward"].astype(np.float64).sum()), 4)) in seen
        np.testing.assert_array_equal(p["next_observation"][:-1], p["observation"][1:])
        assert p["terminal"][-1] == 1 and not p["terminal"][:-1].any()
        assert p["observation"].dtype == np.float32 and p["action"].shape == (len(p["reward"]), 3)


# ---------------------------------------------------------------- the gymnasium path, as the pool ran it

def gymnasium_rollout(env_name: str, n: int, actor, seed: int, min_steps: int, ep_len: int):
    """The pool's rollout, kept as the oracle: env.reset(seed=...), then whole episodes of one gymnasium env
    (n = 1), or of gymnasium's vector env with next-step autoreset, kept by the one-env rule."""
    if n == 1:
        env, paths = make_env(env_name), []
        env.reset(seed=seed)
        while sum(len(p["reward"]) for p in paths) < min_steps:
            paths.append(sample_trajectory(env, actor, ep_len)[0])
        return paths, sum(len(p["reward"]) for p in paths)
    venv = gym.vector.SyncVectorEnv([lambda: make_env(env_name)] * n, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    venv.reset(seed=seed)
    ob, _ = venv.reset()
    episodes, slots, recorded, kept, kept_steps = [], [None] * n, 0, 0, 0

    def launch(rows):
        for i in rows:
            if recorded < min_steps:
                slots[i] = {"obs": [], "acs": [], "rews": [], "last": None}
                episodes.append(slots[i])

    launch(range(n))
    resetting = np.zeros(n, bool)
    while True:
        ob32 = np.array(ob, np.float32)
        acs = actor(ob32)
        next_ob, rew, terminated, truncated, _ = venv.step(acs)
        ended, capped = terminated | truncated, np.zeros(n, bool)
        for i, ep in enumerate(slots):
            if ep is not None:
                ep["obs"].append(ob32[i]), ep["acs"].append(acs[i]), ep["rews"].append(rew[i])
                recorded += 1
                if ended[i] or len(ep["rews"]) >= ep_len:
                    ep["last"], slots[i], capped[i] = np.array(next_ob[i], np.float32), None, not ended[i]
        while kept < len(episodes) and episodes[kept]["last"] is not None and kept_steps < min_steps:
            kept_steps, kept = kept_steps + len(episodes[kept]["rews"]), kept + 1
        if kept_steps >= min_steps:
            return [_trajectory(e["obs"], e["acs"], e["rews"], e["last"]) for e in episodes[:kept]], recorded
        launch(np.flatnonzero(resetting))
        if capped.any() and recorded < min_steps:
            next_ob, _ = venv.reset(options={"reset_mask": capped})
            launch(np.flatnonzero(capped))
        resetting, ob = ended, next_ob


class MixedActor:
    """The oracle of beta-mixing, as the pool ran it: per row of each batch, the expert's action with probability
    `beta`, else the policy's (called on every batch); `expert_steps` counts the rows the expert drove."""

    def __init__(self, policy, expert, beta: float, rng: np.random.Generator) -> None:
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


def student(obs_dim: int, act_dim: int, seed: int, normalize: bool = False, discrete: bool = False):
    r = np.random.default_rng(seed)
    p = {"hidden_0": {"kernel": r.normal(0, 0.5, (obs_dim, 16)).astype(np.float32), "bias": r.normal(0, 0.1, 16).astype(np.float32)},
         "out": {"kernel": r.normal(0, 0.5, (16, act_dim)).astype(np.float32), "bias": np.zeros(act_dim, np.float32)}}
    if not discrete:
        p["log_std"] = np.full(act_dim, -1.0, np.float32)
    if normalize:
        p["obs_mean"], p["obs_std"] = r.normal(0, 1, obs_dim).astype(np.float32), r.uniform(0.5, 2, obs_dim).astype(np.float32)
    return MLPSpec((16,), act_dim, "tanh", discrete, normalize), {"params": p}


def linear_expert(obs_dim: int, act_dim: int):
    """A fixed numpy 'expert' for beta-mixing (a BLAS product whose bits depend on its row count, as an MLP's)."""
    w = np.linspace(-1, 1, obs_dim * act_dim, dtype=np.float32).reshape(obs_dim, act_dim)
    return lambda obs: np.tanh(obs @ w)


@pytest.mark.parametrize("env_name,n,noise,mix", [
    ("Hopper-v4", 1, True, False), ("Hopper-v4", 3, True, True), ("HalfCheetah-v5", 2, False, False),
    ("Ant-v5", 2, True, True), ("CartPole-v1", 1, True, False), ("CartPole-v1", 4, True, True)])
def test_batched_tasks_are_the_gymnasium_path(env_name, n, noise, mix):
    info = make_env(env_name)
    discrete = isinstance(info.action_space, gym.spaces.Discrete)
    act_dim = int(info.action_space.n) if discrete else info.action_space.shape[0]
    ep_len, min_steps, seeds = (40, 150, [5, 9, 77]) if env_name != "HalfCheetah-v5" else (60, 130, [5, 9])
    tasks, want = [], []
    for k, seed in enumerate(seeds):
        spec, params = student(info.observation_space.shape[0], act_dim, k, normalize=n > 1, discrete=discrete)
        state = np.random.default_rng(100 + k).bit_generator.state if noise else None
        m = Mixing(linear_expert(info.observation_space.shape[0], act_dim), 0.4, 1000 + k) if mix and not discrete else None
        tasks.append(RolloutTask("collect", k, env_name, n, spec, params, seed, state, min_steps, ep_len, m))
        rng = None if state is None else np.random.default_rng(0)
        if rng is not None:
            rng.bit_generator.state = state
        actor = NumpyMLP(spec, params, rng)
        if m is not None:
            actor = MixedActor(actor, m.expert, m.beta, np.random.default_rng(m.draw_seed))
        want.append((*gymnasium_rollout(env_name, n, actor, seed, min_steps, ep_len), rng, actor))
    got = run_tasks(tasks, make_rows(env_name, n * len(tasks), 2))
    for g, (paths, steps, rng, actor) in zip(got, want):
        assert_same_paths(g.paths, paths)
        assert g.steps == steps
        assert g.rng_state == (None if rng is None else rng.bit_generator.state)
        assert g.expert_steps == getattr(actor, "expert_steps", 0)
        if mix and not discrete:
            assert 0 < g.expert_steps < g.steps


@pytest.mark.parametrize("k,n", [(1, 1), (3, 1), (2, 2), (4, 5)])
@pytest.mark.parametrize("normalize,discrete", [(False, False), (True, False), (False, True)])
def test_one_batched_forward_is_each_seeds_numpy_mlp(k, n, normalize, discrete):
    pairs = [student(11, 3, s, normalize, discrete) for s in range(k)]
    policies = SeedPolicies(pairs[0][0], [p for _, p in pairs], [np.random.default_rng(s) for s in range(k)], [None] * k)
    alone = [NumpyMLP(spec, params, np.random.default_rng(s)) for s, (spec, params) in enumerate(pairs)]
    for step in range(3):  # the last seed idle at step 1: it draws no noise then, as a finished stream
        obs = np.random.default_rng(step).normal(size=(k, n, 11)).astype(np.float32)
        active = np.arange(k) != (k - 1 if step == 1 else k)
        acs = policies(obs, active)
        for s in np.flatnonzero(active):
            np.testing.assert_array_equal(acs[s], alone[s](obs[s]))
