"""Observation adapters between task versions, checked against the v4 envs themselves, and the experts on v5."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from conftest import cs285_file

from bcjax.acting.envs import make_env
from bcjax.core.adapters import ADAPTERS, SAME_AS_V4, describe_input, obs_map, v4_task
from bcjax.data.bundled import bundled_expert_path
from bcjax.data.expert import load_expert
from bcjax.data.expert_data import collect_expert_paths

warnings.filterwarnings("ignore", message=".*settotalmass.*")


def _same_episode(v5: str, steps: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Observations of the v4 and the v5 task from the same seed and the same actions."""
    e4, e5 = make_env(v4_task(v5)), gym.make(v5)
    o4, _ = e4.reset(seed=7)
    o5, _ = e5.reset(seed=7)
    rng = np.random.default_rng(0)
    obs4, obs5 = [o4], [o5]
    for _ in range(steps):
        a = rng.uniform(e4.action_space.low, e4.action_space.high)
        obs4.append(e4.step(a)[0])
        obs5.append(e5.step(a)[0])
    return np.array(obs4), np.array(obs5)


@pytest.mark.parametrize("task", sorted(ADAPTERS))
def test_adapter_gives_the_v4_observation_exactly(task):
    obs4, obs5 = _same_episode(task)
    assert obs5.shape[1] != obs4.shape[1]  # the layouts differ
    np.testing.assert_array_equal(obs_map(task)(obs5), obs4)


@pytest.mark.parametrize("task", ["Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Swimmer-v5"])
def test_tasks_without_an_adapter_have_the_v4_layout(task):
    assert task in SAME_AS_V4 and obs_map(task) is None
    obs4, obs5 = _same_episode(task, steps=0)  # the layout; Walker2d-v5's dynamics differ (foot friction)
    np.testing.assert_allclose(obs5, obs4, atol=1e-12)


def test_the_log_says_what_is_mapped_and_padded():
    note = describe_input("Ant-v5", 105, 111)
    assert "mapped to the Ant-v4 layout" in note and "padded with 84 zeros" in note
    assert describe_input("Hopper-v5", 11, 11) is None
    assert "truncated from 30 to the expert's first 20" in describe_input("Foo-v1", 30, 20)


@pytest.mark.slow
@pytest.mark.parametrize("robot", ["Ant", "HalfCheetah", "Hopper"])
def test_cs285_experts_reach_their_v4_return_on_v5(robot):
    expert = load_expert(cs285_file("experts", f"{robot}.pkl"))

    def mean_return(task: str) -> float:
        return float(np.mean([p["reward"].sum() for p in collect_expert_paths(expert.for_task(task), task, 2, 0)]))

    v4, v5 = mean_return(f"{robot}-v4"), mean_return(f"{robot}-v5")
    assert v5 == pytest.approx(v4, rel=0.1), (v4, v5)


@pytest.mark.slow
def test_bundled_experts_serve_the_v5_tasks():
    assert bundled_expert_path("Hopper-v5") == bundled_expert_path("Hopper-v4")
    assert bundled_expert_path("Ant-v5") == bundled_expert_path("Ant-v4")
    expert = load_expert(bundled_expert_path("Ant-v5")).for_task("Ant-v5")
    (ep,) = collect_expert_paths(expert, "Ant-v5", 1, 0)
    assert ep["reward"].sum() > 3000 and len(ep["reward"]) == 1000
