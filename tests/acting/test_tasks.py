"""The batch's tasks are gymnasium's, bit for bit: same seeds and actions give the same observations, rewards and flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.seeding import np_random

from bcjax.acting.envs import make_env
from bcjax.acting.tasks import TASKS, BatchEnv

EXPERTS = Path(__file__).resolve().parents[2] / "bcjax" / "experts"
CS285 = Path("/work/shared/cs285/experts")
FAMILIES = ("Hopper", "Walker2d", "HalfCheetah", "Ant", "Humanoid")


def random_policy(name: str, seed: int = 0):
    space = make_env(name).action_space
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(space.low, space.high, (len(obs), *space.shape)).astype(np.float32)


def expert_policy(path: Path, name: str):
    from bcjax.data.expert import load_expert

    return load_expert(str(path)).for_task(name).mean_action_np


def assert_same_as_gymnasium(name: str, policy, steps: int, seeds=(3, 11), nthread: int = 2) -> int:
    """Step gymnasium's envs and one batch row each from the same seeds with the same actions, resetting both
    (gymnasium's way: unseeded, continuing the stream) when an episode ends; returns the resets seen."""
    envs = [make_env(name) for _ in seeds]
    batch, ids = BatchEnv(name, len(seeds), nthread), np.arange(len(seeds))
    rngs = [np_random(s)[0] for s in seeds]  # reset(seed=s)'s generator, which later resets continue
    want = np.stack([e.reset(seed=s)[0] for e, s in zip(envs, seeds)])
    np.testing.assert_array_equal(batch.reset(ids, rngs), want)
    resets = 0
    for t in range(steps):
        actions = policy(want.astype(np.float32))
        out = [e.step(a) for e, a in zip(envs, actions)]
        got = batch.step(ids, actions)
        for k, field in enumerate(("observation", "reward", "terminated", "truncated")):
            np.testing.assert_array_equal(got[k], np.array([o[k] for o in out]), err_msg=f"{name} {field}, step {t}")
        want = got[0].copy()
        ended = np.flatnonzero(got[2] | got[3])
        if len(ended):
            want[ended] = np.stack([envs[i].reset()[0] for i in ended])
            np.testing.assert_array_equal(batch.reset(ended, [rngs[i] for i in ended]), want[ended],
                                          err_msg=f"{name} reset after step {t}")
            resets += len(ended)
    return resets


def test_every_family_and_version_is_a_task():
    assert sorted(TASKS) == sorted(f"{f}-{v}" for f in FAMILIES for v in ("v4", "v5"))
    for name in TASKS:
        env = make_env(name)
        obs, _ = env.reset(seed=0)
        assert BatchEnv(name, 1, 1).reset(np.arange(1), [np_random(0)[0]]).shape == (1, *obs.shape)


@pytest.mark.parametrize("name", ["Hopper-v4", "Walker2d-v5", "HalfCheetah-v4", "Ant-v5", "Humanoid-v4"])
def test_one_task_per_family_follows_gymnasium(name):
    # one version per family, in the default suite; random actions end Hopper, Walker2d, Ant, Humanoid often
    assert_same_as_gymnasium(name, random_policy(name), 120)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TASKS))
def test_random_actions_for_1000_steps_and_resets(name):
    resets = assert_same_as_gymnasium(name, random_policy(name, 1), 1010)
    assert resets >= 2  # HalfCheetah only at its 1000-step truncation


EXPERT_CASES = [(f"{f}-{v}", EXPERTS / f"{f}-v4.pkl") for f in ("Hopper", "Walker2d", "HalfCheetah", "Ant")
                for v in ("v4", "v5")] + [(f"{f}-v4", CS285 / f"{f}.pkl") for f in ("Hopper", "HalfCheetah", "Ant")]


@pytest.mark.slow
@pytest.mark.parametrize("name,path", EXPERT_CASES, ids=[f"{n}-{p.parent.name}" for n, p in EXPERT_CASES])
def test_expert_actions_for_1000_steps_and_resets(name, path):
    if not path.exists():
        pytest.skip(f"no expert file {path}")
    assert_same_as_gymnasium(name, expert_policy(path, name), 1010)


def test_thread_count_does_not_change_a_bit():
    runs = []
    for nthread in (1, 3):
        policy = random_policy("Hopper-v5", 4)
        batch, ids = BatchEnv("Hopper-v5", 5, nthread), np.arange(5)
        obs, out = batch.reset(ids, [np_random(s)[0] for s in range(5)]), []
        for _ in range(60):
            out.append(batch.step(ids, policy(obs))[:2])
            obs = out[-1][0]
        runs.append(out)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
