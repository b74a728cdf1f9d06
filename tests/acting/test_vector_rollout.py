"""Vector-env rollouts keep exactly the episodes a single env would, in launch order."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

from bcjax.acting.envs import make_env, make_vector_env, resolve_vector_mode
from bcjax.acting.rollout import sample_trajectories

LENGTHS = [3, 1, 7, 2, 5, 4, 6, 1, 9, 2, 2, 8, 3, 5, 1, 6, 4, 7, 2, 3] * 5


class Countdown(gym.Env):
    """Episode k (k-th reset over all copies sharing `counter`) lasts LENGTHS[k] steps.

    The observation is (k, t); the reward echoes the action, so a misaligned row shows.
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


def countdown(max_steps: int | None = None) -> gym.Env:
    env = Countdown(itertools.count())
    return env if max_steps is None else gym.wrappers.TimeLimit(env, max_steps)


def countdown_vector(n: int, max_steps: int | None = None) -> gym.vector.VectorEnv:
    counter = itertools.count()  # one launch numbering for all copies, as one env would have

    def make() -> gym.Env:
        env = Countdown(counter)
        return env if max_steps is None else gym.wrappers.TimeLimit(env, max_steps)

    return gym.vector.SyncVectorEnv([make] * n)


def assert_same_paths(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for key in ("observation", "action", "reward", "next_observation", "terminal"):
            np.testing.assert_array_equal(g[key], w[key], err_msg=key)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("min_steps", [1, 4, 10, 17, 41])
@pytest.mark.parametrize("ep_len,max_steps", [(1000, None), (4, None), (1000, 5)])
def test_vector_keeps_the_single_env_episodes(n, min_steps, ep_len, max_steps):
    want, want_steps = sample_trajectories(countdown(max_steps), echo_actor, min_steps, ep_len)
    got, got_steps = sample_trajectories(countdown_vector(n, max_steps), echo_actor, min_steps, ep_len)
    assert_same_paths(got, want)
    # the same episodes kept; the steps taken also count the episodes launched and then dropped
    assert got_steps >= want_steps == sum(len(p["reward"]) for p in got)


def test_episodes_by_hand():
    # LENGTHS start 3, 1, 7, 2: 3 + 1 < 5, so episodes 0, 1, 2 are kept and the short 3 is not.
    paths, steps = sample_trajectories(countdown_vector(4), echo_actor, 5, 1000)
    assert [len(p["reward"]) for p in paths] == [3, 1, 7]
    assert steps > 11  # 11 kept, plus the steps of the episode launched and dropped
    p = paths[0]
    np.testing.assert_array_equal(p["observation"], [[0, 0], [0, 1], [0, 2]])
    np.testing.assert_array_equal(p["next_observation"], [[0, 1], [0, 2], [0, 3]])
    np.testing.assert_array_equal(p["action"][:, 0], [0, 1, 2])
    np.testing.assert_array_equal(p["reward"], [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(p["terminal"], [0, 0, 1])


def test_one_batched_actor_call_per_vector_step():
    batches = []

    def actor(obs):
        batches.append(obs.shape)
        return echo_actor(obs)

    sample_trajectories(countdown_vector(3), actor, 20, 1000)
    assert set(batches) == {(3, 2)}


def test_next_step_autoreset_is_required():
    venv = gym.vector.SyncVectorEnv([countdown] * 2, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    with pytest.raises(ValueError, match="next-step autoreset"):
        sample_trajectories(venv, echo_actor, 5, 10)


def test_hopper_returns_lengths_and_flags():
    # RecordEpisodeStatistics sees every episode each copy ran: the kept ones must be among them, exactly.
    venv = gym.vector.SyncVectorEnv([lambda: gym.wrappers.RecordEpisodeStatistics(make_env("Hopper-v4"))] * 3)
    venv.reset(seed=3)
    rng = np.random.default_rng(0)
    paths, steps = sample_trajectories(venv, lambda obs: rng.uniform(-1, 1, (len(obs), 3)), 300, 1000)
    lengths = [len(p["reward"]) for p in paths]
    assert sum(lengths[:-1]) < 300 <= sum(lengths) <= steps
    seen = {(n, round(r, 4)) for e in venv.envs for n, r in zip(e.length_queue, e.return_queue)}
    for p in paths:
        assert (len(p["reward"]), round(float(p["reward"].astype(np.float64).sum()), 4)) in seen
        np.testing.assert_array_equal(p["next_observation"][:-1], p["observation"][1:])
        assert p["terminal"][-1] == 1 and not p["terminal"][:-1].any()
        assert p["observation"].dtype == np.float32 and p["action"].shape == (len(p["reward"]), 3)


def test_async_matches_sync_on_the_same_seeds():
    def policy(obs):
        return (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)

    out = []
    for mode in ("sync", "async"):
        venv = make_vector_env("CartPole-v1", 2, mode, seed=7)
        out.append(sample_trajectories(venv, policy, 300, 60))
        venv.close()
    (got, got_steps), (want, want_steps) = out
    assert got_steps == want_steps >= 300
    assert_same_paths(got, want)


def test_vector_mode_choice():
    assert resolve_vector_mode("sync", 8) == "sync"
    assert resolve_vector_mode("auto", 1) == "sync"
