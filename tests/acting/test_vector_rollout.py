"""A stream's rollouts are the same on any number of envs side by side: the episodes one gymnasium env gives,
in launch order, each with its own noise and beta draws."""

from __future__ import annotations

import itertools
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest

from bcjax.acting.envs import GymEnvs, make_env
from bcjax.acting.rollout import SeedPolicies, sample_streams, sample_trajectory
from bcjax.acting.runner import Mixing, RolloutTask, make_rows, run_tasks
from bcjax.core.mlp import ACTIVATIONS, MLPSpec, NumpyMLP, forward, linear, net

LENGTHS = [3, 1, 7, 2, 5, 4, 6, 1, 9, 2, 2, 8, 3, 5, 1, 6, 4, 7, 2, 3] * 5


class Countdown(gym.Env):
    """Episode k (the k-th reset over all copies sharing `counter`) lasts LENGTHS[k] steps.

    The observation is (k, t); the reward echoes the action, so a misaligned row shows. The counter starts
    at -1: a rollout's first reset (reset(seed=...)'s, whose episode is never recorded) takes no LENGTHS entry.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def __init__(self, counter: itertools.count):
        self.counter = counter
        self.k = self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.k, self.t = next(self.counter), 0
        return np.array([self.k, 0], np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.array([self.k, self.t], np.float32)
        return obs, float(action[0]) + 0.5, self.t >= LENGTHS[self.k], False, {}


def echo_actor(obs: np.ndarray) -> np.ndarray:
    """A deterministic 'policy': action = 100 k + t."""
    return (100 * obs[:, :1] + obs[:, 1:2]).astype(np.float32)


def countdowns(n: int, max_steps: int | None = None) -> GymEnvs:
    counter = itertools.count(-1)  # one launch numbering for all copies, as one env would have
    envs = [Countdown(counter) for _ in range(n)]
    return GymEnvs(envs if max_steps is None else [gym.wrappers.TimeLimit(e, max_steps) for e in envs])


class OneStream:
    """sample_streams' actor for one stream driven by `actor` (no noise of its own, no mixing)."""

    def __init__(self, actor) -> None:
        self.actor = actor

    def begin(self, rows: np.ndarray) -> None:
        pass

    def __call__(self, obs: np.ndarray, active: np.ndarray):
        return np.asarray(self.actor(obs)), None


def sample(env, actor, n: int, min_steps: int, ep_len: int, seed: int = 0):
    paths, steps, _ = sample_streams(env, OneStream(actor), [seed], [n], [min_steps], ep_len)[0]
    return paths, steps


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
    assert got_steps == want_steps == sum(len(p["reward"]) for p in got)  # the kept episodes' steps


def test_episodes_by_hand():
    # LENGTHS start 3, 1, 7, 2: 3 + 1 < 5, so episodes 0, 1, 2 are kept and the short 3 is not.
    paths, steps = sample(countdowns(4), echo_actor, 4, 5, 1000)
    assert [len(p["reward"]) for p in paths] == [3, 1, 7]
    assert steps == 11  # the episode launched on the fourth row and dropped does not count
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
    assert sum(lengths[:-1]) < 300 <= sum(lengths) == steps
    seen = {(n, round(r, 4)) for e in envs.envs for n, r in zip(e.length_queue, e.return_queue)}
    for p in paths:
        assert (len(p["reward"]), round(float(p["reward"].astype(np.float64).sum()), 4)) in seen
        np.testing.assert_array_equal(p["next_observation"][:-1], p["observation"][1:])
        assert p["terminal"][-1] == 1 and not p["terminal"][:-1].any()
        assert p["observation"].dtype == np.float32 and p["action"].shape == (len(p["reward"]), 3)


# ---------------------------------------------------------------- against one gymnasium env, by hand

def one_env_rollout(env_name: str, spec: MLPSpec, params: dict, seed: int, noise_seed: int | None, mix: Mixing | None,
                    min_steps: int, ep_len: int):
    """The oracle: env.reset(seed=...), then whole episodes of one gymnasium env until min_steps; episode j draws
    its noise, (ep_len, act_dim) standard normals (Gumbel for logits), as the j-th block of default_rng(noise_seed),
    and its beta draws as the j-th ep_len uniforms of default_rng(mix.draw_seed). Returns paths, steps, expert steps."""
    env, paths, expert_steps = make_env(env_name), [], 0
    env.reset(seed=seed)
    mlp, act = net(spec, params), ACTIVATIONS[spec.activation]
    std = None if spec.discrete else np.exp(params["params"]["log_std"])
    rng = None if noise_seed is None else np.random.default_rng(noise_seed)
    draws = None if mix is None else np.random.default_rng(mix.draw_seed)
    while sum(len(p["reward"]) for p in paths) < min_steps:
        shape = (ep_len, spec.act_dim)
        noise = None if rng is None else (rng.gumbel(size=shape) if spec.discrete else
                                          rng.standard_normal(shape, dtype=np.float32))
        u, t = None if draws is None else draws.random(ep_len), itertools.count()

        def actor(obs):
            nonlocal expert_steps
            i, out = next(t), forward(spec, mlp, obs, act)
            if noise is not None:
                out = out + (noise[i] if spec.discrete else std * noise[i])
            a = np.argmax(out, axis=-1) if spec.discrete else out
            if u is not None and u[i] < mix.beta:
                expert_steps += 1
                a = np.asarray(mix.expert(obs), a.dtype)
            return a

        paths.append(sample_trajectory(env, actor, ep_len)[0])
    return paths, sum(len(p["reward"]) for p in paths), expert_steps


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
    """A fixed numpy 'expert' for beta-mixing, called on however many rows it drives at a step (core.mlp's
    linear: a row's bits do not depend on them)."""
    w = np.linspace(-1, 1, obs_dim * act_dim, dtype=np.float32).reshape(obs_dim, act_dim)
    return lambda obs: np.tanh(linear(obs, (w, np.zeros(act_dim, np.float32))))


@pytest.mark.parametrize("env_name,noise,mix", [
    ("Hopper-v4", True, False), ("Hopper-v4", True, True), ("HalfCheetah-v5", False, False), ("Ant-v5", True, True),
    ("CartPole-v1", True, False), ("CartPole-v1", False, False)])
def test_any_number_of_rows_gives_one_gymnasium_envs_rollout(env_name, noise, mix):
    info = make_env(env_name)
    discrete = isinstance(info.action_space, gym.spaces.Discrete)
    act_dim, obs_dim = int(info.action_space.n) if discrete else info.action_space.shape[0], info.observation_space.shape[0]
    ep_len, min_steps, seeds = (40, 150, [5, 9, 77]) if env_name != "HalfCheetah-v5" else (60, 130, [5, 9])
    tasks, want = [], []
    for k, seed in enumerate(seeds):
        spec, params = student(obs_dim, act_dim, k, normalize=mix, discrete=discrete)
        m = Mixing(linear_expert(obs_dim, act_dim), 0.4, 1000 + k) if mix else None
        noise_seed = 100 + k if noise and k != 1 else None  # with noise, seed 1 acts on its mean beside the others
        steps = min_steps + 40 * k  # a phase's seeds beside another phase's: other step counts
        tasks.append(RolloutTask("collect", k, env_name, 1, spec, params, seed, noise_seed, steps, ep_len, m))
        want.append(one_env_rollout(env_name, spec, params, seed, noise_seed, m, steps, ep_len))
    for ns in ([1] * len(seeds), [2] * len(seeds), [5] * len(seeds), [1 + 3 * k % 5 for k in range(len(seeds))]):
        got = run_tasks([replace(t, num_envs=n) for t, n in zip(tasks, ns)], make_rows(env_name, sum(ns), 2))
        for g, (paths, steps, expert_steps) in zip(got, want):
            assert_same_paths(g.paths, paths)
            assert (g.steps, g.expert_steps) == (steps, expert_steps)
            if mix:
                assert 0 < g.expert_steps < g.steps


@pytest.mark.parametrize("k,n,ragged", [(1, 1, None), (2, 2, None), (3, 7, None), (5, 1, None), (4, 2, 5), (3, 1, 3)])
@pytest.mark.parametrize("normalize,discrete", [(False, False), (True, False), (False, True)])
def test_a_rows_action_does_not_depend_on_the_other_rows(k, n, ragged, normalize, discrete):
    # BLAS gives a row other bits in a batch of another size or at another position (a 64-wide layer does):
    # SeedPolicies' one forward for K seeds' n rows must give each row its one-row NumpyMLP bits
    pairs = [student(11, 3, s, normalize, discrete) for s in range(k)]
    pairs = [(spec._replace(hidden=(64,)), {"params": {**p["params"], "hidden_0": {
        "kernel": np.random.default_rng(s).normal(0, 0.3, (11, 64)).astype(np.float32), "bias": np.zeros(64, np.float32)},
        "out": {"kernel": np.random.default_rng(s).normal(0, 0.3, (64, 3)).astype(np.float32),
                "bias": np.zeros(3, np.float32)}}}) for s, (spec, p) in enumerate(pairs)]
    ns = [n] * k if ragged is None else [1 + (n + s) % ragged for s in range(k)]  # a seed's rows: ns[s]
    policies = SeedPolicies(pairs[0][0], [p for _, p in pairs], [None] * k, [None] * k, ns, 10)
    alone = [NumpyMLP(spec, params) for spec, params in pairs]
    obs = np.random.default_rng(1).normal(size=(sum(ns), 11)).astype(np.float32)
    acs, took = policies(obs, np.ones(k, bool))
    assert took is None and len(acs) == sum(ns)
    first = np.cumsum([0] + ns)
    for s in range(k):
        rows = obs[first[s]:first[s + 1]]
        for i in range(ns[s]):
            np.testing.assert_array_equal(acs[first[s] + i], alone[s](rows[i:i + 1])[0])
        np.testing.assert_array_equal(alone[s](rows), acs[first[s]:first[s + 1]])  # NumpyMLP on its rows at once too
