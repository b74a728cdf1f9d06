"""Environment creation: gymnasium tasks with per-task kwargs, dims and video fps."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from bcjax.errors import BcjaxError

# Keyword arguments the CS285 experts and data were made with.
TASK_KWARGS: dict[str, dict] = {"Ant-v4": {"use_contact_forces": False}}


def ignore_outdated_task_warnings() -> None:
    """Hide gymnasium's "upgrade to v5" warning (the homework targets v4 on purpose): process-wide when an
    entry point calls it, scoped when `make_env` does."""
    warnings.filterwarnings("ignore", message=".*is out of date.*")


@dataclass(frozen=True)
class EnvInfo:
    """What the pipeline needs to know about a task."""

    env_name: str
    obs_dim: int
    act_dim: int  # number of discrete actions for a Discrete space
    discrete: bool
    max_episode_steps: int


_MUJOCO_SEEN: set[str] = set()


def _mujoco_warning(msg: str) -> None:
    # Once per kind and process: MuJoCo repeats a model's warning at every load, and a time stamp in others.
    msg = msg.split(" Time = ")[0]
    if msg not in _MUJOCO_SEEN:
        _MUJOCO_SEEN.add(msg)
        warnings.warn(f"MuJoCo: {msg}", RuntimeWarning, stacklevel=2)


def route_mujoco_warnings() -> None:
    """MuJoCo's default warning handler appends to MUJOCO_LOG.TXT in the working directory (an unstable
    HalfCheetah episode does): route its warnings through Python's `warnings` instead. A handler the
    user set is kept."""
    import mujoco

    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_mujoco_warning)


def is_mujoco(env_name: str) -> bool:
    try:
        return "mujoco" in str(gym.spec(env_name).entry_point)
    except gym.error.Error:
        return False


def make_env(env_name: str, seed: int | None = None) -> gym.Env:
    """gym.make with the task's kwargs (video makes its rendering envs in bcjax.acting.video)."""
    try:
        if is_mujoco(env_name):  # before the model loads (it may warn)
            route_mujoco_warnings()
        with warnings.catch_warnings():
            ignore_outdated_task_warnings()
            env = gym.make(env_name, **TASK_KWARGS.get(env_name, {}))
    except gym.error.Error as e:
        raise BcjaxError(f"unknown environment id {env_name!r} ({e}); pick a gymnasium id such as Hopper-v4") from None
    except (ImportError, ModuleNotFoundError) as e:
        raise BcjaxError(f"environment {env_name!r} needs a missing package ({e}); install gymnasium[mujoco]") from None
    if not isinstance(env.action_space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise BcjaxError(f"{env_name}: action space {env.action_space} is neither Box nor Discrete")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        raise BcjaxError(f"{env_name}: only flat Box observations are supported, got {env.observation_space}")
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


class GymEnvs:
    """Rows of one gymnasium env each, stepped in a loop: the tasks bcjax.acting.tasks does not batch
    (CartPole and the other cheap ones); autoreset is the rollout's (bcjax.acting.rollout.sample_streams)."""

    def __init__(self, envs: list[gym.Env]) -> None:
        self.envs = envs

    def reset(self, ids: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
        """env.reset() of row ids[j] with np_random `rngs[j]`, in order (BatchEnv's reset)."""
        obs = []
        for i, rng in zip(ids, rngs):
            self.envs[i].np_random = rng
            obs.append(self.envs[i].reset()[0])
        return np.stack(obs)

    def step(self, ids: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        out = [self.envs[i].step(a) for i, a in zip(ids, actions)]
        return tuple(np.array([o[k] for o in out]) for k in range(4))


def env_info(env: gym.Env) -> EnvInfo:
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    act_dim = int(env.action_space.n) if discrete else int(np.prod(env.action_space.shape))
    return EnvInfo(
        env_name=env.spec.id if env.spec else str(env),
        obs_dim=int(env.observation_space.shape[0]),
        act_dim=act_dim,
        discrete=discrete,
        max_episode_steps=int(env.spec.max_episode_steps or 1000) if env.spec else 1000,
    )

