"""gymnasium's MuJoCo locomotion tasks as array functions, and `BatchEnv`: many copies in one mujoco.batch.Batch.

Each task's observation, reward, termination and reset noise is written once, over rows of the batch's bound
arrays (one row per simulation), following the installed gymnasium's own code (named per task below) with its
defaults (and bcjax.acting.envs.TASK_KWARGS). Every operation is the one gymnasium does on one env, in its order
and dtypes, so a row gives gymnasium's observations, rewards and flags bit for bit (tests/test_tasks.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import mujoco
import mujoco.batch
import numpy as np

from bcjax.acting.envs import make_env

Rows = SimpleNamespace  # qpos, qvel, ctrl and the task's derived fields, (n, ...) each; model


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1)


@dataclass(frozen=True)
class Task:
    obs: Callable[[Rows], np.ndarray]
    position: Callable[[Rows], np.ndarray]  # (n,): the x whose change over dt is the rewarded velocity
    forward_weight: float
    ctrl_weight: float
    noise: float  # reset_noise_scale: qpos uniform in ±noise; qvel too, or noise * standard normal
    normal_qvel: bool = False
    healthy: Callable[[Rows], np.ndarray] | None = None  # None: never terminates (HalfCheetah)
    healthy_reward: float = 0.0
    paid_always: bool = False  # v4: float(is_healthy or terminate_when_unhealthy) * healthy_reward; v5 pays it healthy only
    contact_cost: Callable[[Rows], np.ndarray] | None = None
    ctrl_of_data: bool = False  # Humanoid: the cost of data.ctrl (float64), not of the (float32) action
    fields: tuple[str, ...] = ()  # derived MjData fields it reads
    rne: bool = False  # reads cfrc_ext, which gymnasium's mj_rnePostConstraint after each step fills

    def reward(self, r: Rows, velocity: np.ndarray, action: np.ndarray, healthy: np.ndarray | None) -> np.ndarray:
        ctrl = r.ctrl if self.ctrl_of_data else action
        ctrl_cost = self.ctrl_weight * np.add.reduce(np.square(ctrl), axis=1)  # np.sum's reduction, without its wrapper
        rewards = self.forward_weight * velocity
        if healthy is not None:
            rewards = rewards + (self.healthy_reward if self.paid_always else healthy * self.healthy_reward)
        return rewards - (ctrl_cost if self.contact_cost is None else ctrl_cost + self.contact_cost(r))

    def reset_state(self, rng: np.random.Generator, qpos: np.ndarray, qvel: np.ndarray) -> tuple:
        """reset_model: the same draws, in the same order, from the env's np_random."""
        s = self.noise
        qpos = qpos + rng.uniform(low=-s, high=s, size=len(qpos))
        return qpos, qvel + (s * rng.standard_normal(len(qvel)) if self.normal_qvel else
                             rng.uniform(low=-s, high=s, size=len(qvel)))


def _below(x: np.ndarray, bound: float) -> np.ndarray:
    # all(|x| < bound) per row, for every float (nan too: max propagates it, and nan < bound is False)
    return np.maximum.reduce(np.abs(x), axis=1) < bound


def _hopper_healthy(r: Rows) -> np.ndarray:  # hopper_v4.py / hopper_v5.py is_healthy
    # lo < x < hi with lo = -hi is |x| < hi, for every float (nan and inf too): fewer calls per step
    z = r.qpos[:, 1]
    return _below(r.qpos[:, 2:], 100.0) & _below(r.qvel, 100.0) & (0.7 < z) & (z < np.inf) & (np.abs(r.qpos[:, 2]) < 0.2)


def _walker_healthy(r: Rows) -> np.ndarray:  # walker2d_v4.py / walker2d_v5.py is_healthy
    z = r.qpos[:, 1]
    return (0.8 < z) & (z < 2.0) & (np.abs(r.qpos[:, 2]) < 1.0)


def _ant_healthy(r: Rows) -> np.ndarray:  # ant_v4.py / ant_v5.py is_healthy
    z = r.qpos[:, 2]
    return np.logical_and.reduce(np.isfinite(np.concatenate([r.qpos, r.qvel], axis=1)), axis=1) & (0.2 <= z) & (z <= 1.0)


def _humanoid_healthy(r: Rows) -> np.ndarray:  # humanoid_v4.py / humanoid_v5.py is_healthy
    return (1.0 < r.qpos[:, 2]) & (r.qpos[:, 2] < 2.0)


def _mass_center_x(r: Rows) -> np.ndarray:  # humanoid_v4.py / humanoid_v5.py mass_center
    return (np.einsum("b,nbj->nj", r.model.body_mass, r.xipos) / r.model.body_mass.sum())[:, 0]


def _humanoid_obs(v5: bool) -> Callable[[Rows], np.ndarray]:  # humanoid_v4.py / humanoid_v5.py _get_obs
    b, a = int(v5), 6 * v5  # v5 drops the world body's rows and the free joint's dofs
    return lambda r: np.concatenate([r.qpos[:, 2:], r.qvel, _flat(r.cinert[:, b:]), _flat(r.cvel[:, b:]),
                                     r.qfrc_actuator[:, a:], _flat(r.cfrc_ext[:, b:])], axis=1)


def _tasks() -> dict[str, Task]:
    x = lambda r: r.qpos[:, 0]  # noqa: E731
    # np.clip(qvel, -10, 10) as its two ufuncs (the same values, nan too), without np.clip's wrapper
    walker_obs = lambda r: np.concatenate([r.qpos[:, 1:], np.minimum(np.maximum(r.qvel, -10.0), 10.0)], axis=1)  # noqa: E731
    tasks = {}
    for v in ("v4", "v5"):
        v4 = v == "v4"
        # hopper_{v}.py, walker2d_{v}.py: x velocity + healthy reward - 1e-3 |a|², unhealthy ends it
        tasks[f"Hopper-{v}"] = Task(walker_obs, x, 1.0, 1e-3, 5e-3, healthy=_hopper_healthy, healthy_reward=1.0,
                                    paid_always=v4)
        tasks[f"Walker2d-{v}"] = Task(walker_obs, x, 1.0, 1e-3, 5e-3, healthy=_walker_healthy, healthy_reward=1.0,
                                      paid_always=v4)
        # half_cheetah_{v}.py: x velocity - 0.1 |a|², never ends
        tasks[f"HalfCheetah-{v}"] = Task(lambda r: np.concatenate([r.qpos[:, 1:], r.qvel], axis=1), x, 1.0, 0.1,
                                         0.1, normal_qvel=True)
        # humanoid_{v}.py: 1.25 x velocity of the mass centre + 5 healthy - 0.1 |ctrl|² (v5: - contact cost)
        tasks[f"Humanoid-{v}"] = Task(
            _humanoid_obs(not v4), _mass_center_x, 1.25, 0.1, 1e-2, healthy=_humanoid_healthy, healthy_reward=5.0,
            paid_always=v4, ctrl_of_data=True, fields=("xipos", "cinert", "cvel", "qfrc_actuator"), rne=True,
            contact_cost=None if v4 else lambda r: np.clip(5e-7 * np.sum(np.square(r.cfrc_ext), axis=(1, 2)),
                                                           -np.inf, 10.0))
    # ant_v4.py with use_contact_forces=False (TASK_KWARGS): x velocity of the torso + 1 healthy - 0.5 |a|²
    ant_obs = lambda r: np.concatenate([r.qpos[:, 2:], r.qvel], axis=1)  # noqa: E731
    torso_x = lambda r: r.xpos[:, 1, 0]  # noqa: E731
    tasks["Ant-v4"] = Task(ant_obs, torso_x, 1.0, 0.5, 0.1, normal_qvel=True, healthy=_ant_healthy,
                           healthy_reward=1.0, paid_always=True, fields=("xpos",))
    # ant_v5.py: also observes the clipped contact forces and pays 5e-4 of their square
    clipped = lambda r: np.clip(r.cfrc_ext, -1.0, 1.0)  # noqa: E731
    tasks["Ant-v5"] = Task(lambda r: np.concatenate([ant_obs(r), _flat(clipped(r)[:, 1:])], axis=1), torso_x, 1.0,
                           0.5, 0.1, normal_qvel=True, healthy=_ant_healthy, healthy_reward=1.0, fields=("xpos",),
                           rne=True, contact_cost=lambda r: 5e-4 * np.sum(np.square(clipped(r)), axis=(1, 2)))
    return tasks


TASKS = _tasks()


class BatchEnv:
    """`nsim` copies of a TASKS task in one mujoco.batch.Batch on `nthread` threads, reset and stepped by rows
    as gymnasium's env in its TimeLimit is (bcjax.acting.rollout drives it).

    A row is gymnasium's MjData after the same calls: the batch steps it bit for bit as mj_step does; its
    reset draws from the generator it is given, as gymnasium's from the env's np_random. cfrc_ext
    (Ant-v5, Humanoid) comes from mj_rnePostConstraint on each stepped row's MjData (a persistent batch).
    """

    def __init__(self, env_name: str, nsim: int, nthread: int) -> None:
        env = make_env(env_name)
        base, self.task = env.unwrapped, TASKS[env_name]
        self.model, self.init, self.frame_skip, self.dt = base.model, (base.init_qpos, base.init_qvel), base.frame_skip, base.dt
        self.max_steps = env.spec.max_episode_steps
        env.close()
        self.batch = mujoco.batch.Batch(self.model, nsim, nthread, persistent=self.task.rne)
        self.bound = {name: self.batch.bind(name) for name in ("qpos", "qvel", "ctrl", *self.task.fields)}
        self.cfrc_ext = np.zeros((nsim, self.model.nbody, 6))
        self.scratch = mujoco.MjData(self.model) if self.task.rne else None
        self.elapsed = np.zeros(nsim, np.int64)  # TimeLimit's steps since the reset
        self.position = np.zeros(nsim)  # the position before the next step: the last call's
        self.all_rows = Rows(model=self.model, cfrc_ext=self.cfrc_ext, **self.bound)  # views: always current

    def _sel(self, ids: np.ndarray) -> np.ndarray | slice:
        # ids are sorted and distinct: all of them is a slice, whose views copy nothing
        return slice(None) if len(ids) == len(self.elapsed) else ids

    def _rows(self, ids: np.ndarray) -> Rows:
        sel = self._sel(ids)
        if isinstance(sel, slice):
            return self.all_rows
        return Rows(model=self.model, cfrc_ext=self.cfrc_ext[sel], **{k: a[sel] for k, a in self.bound.items()})

    def reset(self, ids: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
        """MujocoEnv.reset with np_random `rngs[j]` for row ids[j], in order: the rows' observations."""
        self.batch.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        for i, rng in zip(ids, rngs):
            self.bound["qpos"][i], self.bound["qvel"][i] = self.task.reset_state(rng, *self.init)
        self.batch.forward(ids)  # set_state's mj_forward: the derived fields the observation and position read
        self.cfrc_ext[ids] = 0  # mj_resetData zeroed it, and mj_forward does not compute it
        self.elapsed[ids] = 0
        rows = self._rows(ids)
        self.position[ids] = self.task.position(rows)
        return self.task.obs(rows)

    def step(self, ids: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        """The rows' env.step(action): observations, rewards, terminated, truncated."""
        sel = self._sel(ids)
        self.bound["ctrl"][sel] = actions
        self.batch.step(None if isinstance(sel, slice) else ids, nstep=self.frame_skip)
        for i in ids if self.task.rne else ():
            mujoco.mj_rnePostConstraint(self.model, self.batch.get_data(i, self.scratch))
            self.cfrc_ext[i] = self.scratch.cfrc_ext
        rows = self._rows(ids)
        after = self.task.position(rows)
        velocity = (after - self.position[sel]) / self.dt
        self.position[sel] = after
        healthy = None if self.task.healthy is None else self.task.healthy(rows)
        reward = self.task.reward(rows, velocity, actions, healthy)
        self.elapsed[sel] += 1
        terminated = np.zeros(len(ids), bool) if healthy is None else ~healthy
        return self.task.obs(rows), reward, terminated, self.elapsed[sel] >= self.max_steps
