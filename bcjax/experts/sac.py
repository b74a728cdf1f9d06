"""Soft Actor-Critic (Haarnoja et al. 2018, automatic temperature) in functional JAX/Flax.

Everything here is pure: the networks, `sac_update` (critic, actor, temperature
and target step over one minibatch) and `train_chunk` (insert a chunk of fresh
transitions into the on-device replay ring, bcjax.core.buffer's with one seed, then
run that many updates in one `lax.scan`). The state is an immutable `SACState`.

The actor's hidden layers use tanh and its action is `tanh(mean) * scale + bias`,
so the trained deterministic policy is exactly a CS285 tanh network (see
`export_cs285`): no distillation is needed for export.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

from bcjax.core import buffer
from bcjax.core.mlp import ACTIVATIONS, Layer, dense, hidden_layers, linear, trunk
from bcjax.core.model import DenseParams, activation
from bcjax.data.expert import mlp_to_cs285

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
FIELDS = ("observation", "action", "reward", "next_observation", "done")  # a replay row


@dataclass(frozen=True)
class SACConfig:
    """Hyperparameters (the SAC paper's MuJoCo settings)."""

    hidden: tuple[int, ...] = (256, 256)
    lr: float = 3e-4  # of actor, critics and temperature
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256  # the temperature starts at 1 and its target entropy is -act_dim


class Actor(nn.Module):
    """The MLP trunk (tanh, bcjax.core.mlp.trunk) -> its own heads: (pre-squash mean, state-dependent log_std).
    Layer names fix the export order."""

    act_dim: int
    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        fan_in = [obs.shape[-1], *self.hidden]
        h = trunk(obs, [DenseParams(n, name=f"hidden_{i}")(fan_in[i]) for i, n in enumerate(self.hidden)],
                  activation("tanh"), jnp)
        mean, log_std = (DenseParams(self.act_dim, name=name)(fan_in[-1]) for name in ("mean", "log_std"))
        return actor_heads(h, mean, log_std, jnp)


def actor_heads(h: Any, mean: Layer, log_std: Layer, xp: Any = np) -> tuple[Any, Any]:
    """The actor's own heads on the trunk's output: the pre-squash mean and the state-dependent log-std
    (in numpy for acting and export, in JAX in `Actor`)."""
    return linear(h, mean, xp), xp.clip(linear(h, log_std, xp), LOG_STD_MIN, LOG_STD_MAX)


class QNet(nn.Module):
    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, obs: jax.Array, act: jax.Array) -> jax.Array:
        h = jnp.concatenate([obs, act], -1)
        for n in self.hidden:
            h = nn.relu(nn.Dense(n)(h))
        return nn.Dense(1)(h)[..., 0]


class DoubleCritic(nn.Module):
    """Two independent Q networks evaluated together: output (2, B)."""

    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, obs: jax.Array, act: jax.Array) -> jax.Array:
        twin = nn.vmap(QNet, variable_axes={"params": 0}, split_rngs={"params": True},
                       in_axes=None, out_axes=0, axis_size=2)
        return twin(self.hidden)(obs, act)


class SACState(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    target_critic_params: Any
    log_alpha: TrainState
    act_scale: jax.Array
    act_bias: jax.Array
    key: jax.Array
    step: jax.Array


def create_sac_state(key: jax.Array, obs_dim: int, act_low: np.ndarray, act_high: np.ndarray,
                     cfg: SACConfig) -> SACState:
    """Fresh networks, optimizers and temperature for a task with a Box action space."""
    act_dim = int(np.prod(np.shape(act_low)))
    k_actor, k_critic, key = jax.random.split(key, 3)
    obs0, act0 = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
    actor, critic, tx = Actor(act_dim, cfg.hidden), DoubleCritic(cfg.hidden), optax.adam(cfg.lr)
    critic_params = critic.init(k_critic, obs0, act0)["params"]
    low, high = np.asarray(act_low, np.float32), np.asarray(act_high, np.float32)
    log_alpha = {"log_alpha": jnp.zeros((), jnp.float32)}  # alpha = 1
    return SACState(
        actor=TrainState.create(apply_fn=actor.apply, params=actor.init(k_actor, obs0)["params"], tx=tx),
        critic=TrainState.create(apply_fn=critic.apply, params=critic_params, tx=tx),
        target_critic_params=jax.tree.map(jnp.copy, critic_params),  # distinct buffers: the state is donated
        log_alpha=TrainState.create(apply_fn=None, params=log_alpha, tx=tx),
        act_scale=jnp.asarray((high - low) / 2), act_bias=jnp.asarray((high + low) / 2),
        key=key, step=jnp.zeros((), jnp.int32),
    )


def sample_action(actor: TrainState, params: Any, obs: jax.Array, key: jax.Array,
                  scale: jax.Array, bias: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reparameterized tanh-Gaussian action and its log-probability (pure)."""
    mean, log_std = actor.apply_fn({"params": params}, obs)
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    logp = jnp.sum(-0.5 * ((u - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), -1)
    # log |d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), stable for large |u|.
    logp -= jnp.sum(2 * (jnp.log(2.0) - u - jax.nn.softplus(-2 * u)), -1)
    return jnp.tanh(u) * scale + bias, logp


def sac_update(state: SACState, batch: dict[str, jax.Array], cfg: SACConfig) -> tuple[SACState, dict[str, jax.Array]]:
    """One SAC step on a minibatch: twin critics, actor, temperature, Polyak target."""
    key, k_next, k_pi = jax.random.split(state.key, 3)
    alpha = jnp.exp(state.log_alpha.params["log_alpha"])
    obs, act, next_obs = batch["observation"], batch["action"], batch["next_observation"]

    next_a, next_logp = sample_action(state.actor, state.actor.params, next_obs, k_next,
                                      state.act_scale, state.act_bias)
    q_next = state.critic.apply_fn({"params": state.target_critic_params}, next_obs, next_a).min(0)
    # Time-limit truncation is not a terminal state: `done` holds only `terminated`.
    target = jax.lax.stop_gradient(batch["reward"] + cfg.gamma * (1.0 - batch["done"]) * (q_next - alpha * next_logp))

    def critic_loss(p: Any) -> tuple[jax.Array, jax.Array]:
        q = state.critic.apply_fn({"params": p}, obs, act)
        return 0.5 * jnp.sum(jnp.mean((q - target) ** 2, axis=1)), q.mean()

    (c_loss, q_mean), c_grads = jax.value_and_grad(critic_loss, has_aux=True)(state.critic.params)
    critic = state.critic.apply_gradients(grads=c_grads)

    def actor_loss(p: Any) -> tuple[jax.Array, jax.Array]:
        a, logp = sample_action(state.actor, p, obs, k_pi, state.act_scale, state.act_bias)
        q = state.critic.apply_fn({"params": critic.params}, obs, a).min(0)
        return jnp.mean(alpha * logp - q), logp

    (a_loss, logp), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(state.actor.params)
    actor = state.actor.apply_gradients(grads=a_grads)

    entropy_gap = jax.lax.stop_gradient(logp - act.shape[-1])  # the target entropy: -act_dim
    t_loss, t_grad = jax.value_and_grad(lambda p: -jnp.mean(p["log_alpha"] * entropy_gap))(state.log_alpha.params)
    log_alpha = state.log_alpha.apply_gradients(grads=t_grad)

    target_params = optax.incremental_update(critic.params, state.target_critic_params, cfg.tau)
    new = state.replace(actor=actor, critic=critic, target_critic_params=target_params,
                        log_alpha=log_alpha, key=key, step=state.step + 1)
    return new, {"critic_loss": c_loss, "actor_loss": a_loss, "alpha": alpha, "alpha_loss": t_loss,
                 "q_mean": q_mean, "entropy": -jnp.mean(logp)}


def empty_buffer(capacity: int, obs_dim: int, act_dim: int) -> buffer.Buffer:
    """The on-device replay ring of transitions (fixed capacity, FIFO overwrite)."""
    shapes = ((obs_dim,), (act_dim,), (), (obs_dim,), ())
    return buffer.empty(1, capacity, {f: (shape, jnp.float32) for f, shape in zip(FIELDS, shapes)})


@partial(jax.jit, static_argnames=("n_updates", "cfg"), donate_argnames=("state", "replay"))
def train_chunk(state: SACState, replay: buffer.Buffer, rows: dict[str, jax.Array], count: jax.Array, n_updates: int,
                cfg: SACConfig) -> tuple[SACState, buffer.Buffer, dict[str, jax.Array], Any]:
    """Append the first `count` of `rows` (field -> (1, chunk, ...)) to the ring, then run `n_updates` SAC
    steps on uniform minibatches of its stored rows. One dispatch per chunk of env steps.
    Returns the new state, the new ring, the mean metrics and a copy of the actor params."""
    replay = buffer.insert(replay, rows, count)

    def body(s: SACState, _: None) -> tuple[SACState, dict[str, jax.Array]]:
        key, k = jax.random.split(s.key)
        i = jax.random.randint(k, (cfg.batch_size,), 0, replay.size[0])
        return sac_update(s.replace(key=key), {f: v[0, i] for f, v in replay.data.items()}, cfg)

    state, metrics = jax.lax.scan(body, state, None, length=n_updates)
    # A separate copy of the actor weights: the caller reads it while the next chunk's
    # call (which donates `state`) is already queued, so acting never waits for the GPU.
    return state, replay, jax.tree.map(jnp.mean, metrics), jax.tree.map(jnp.copy, state.actor.params)


insert_rows = jax.jit(buffer.insert, donate_argnums=(0,))  # train_chunk's insert alone (before learning starts)


def host_actor_params(state: SACState, actor_params: Any = None) -> dict[str, Any]:
    """The actor's weights as numpy layers (default: the state's; or a copy from `train_chunk`),
    for acting on the host without a JAX dispatch per env step."""
    p = jax.device_get(state.actor.params if actor_params is None else actor_params)
    return {"hidden": hidden_layers(p), "mean": dense(p["mean"]), "log_std": dense(p["log_std"]),
            "act_scale": np.asarray(state.act_scale), "act_bias": np.asarray(state.act_bias)}


def host_act(params: dict[str, Any], obs: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """numpy actor: a sampled action (rng given) or the deterministic tanh(mean) action."""
    u, log_std = actor_heads(trunk(obs, params["hidden"], ACTIVATIONS["tanh"]), params["mean"], params["log_std"])
    if rng is not None:
        u = u + np.exp(log_std) * rng.standard_normal(u.shape).astype(np.float32)
    return np.tanh(u) * params["act_scale"] + params["act_bias"]


def export_cs285(state: SACState, obs_sample: np.ndarray) -> dict[str, Any]:
    """The deterministic policy as a CS285 expert dict whose mean action is exactly tanh(mean(trunk(obs))) * scale + bias.

    The CS285 format has a linear output, so the squashing is represented as one more tanh hidden
    layer (the mean head) followed by `out` = diag(scale), bias. CS285's log-std is
    state-independent: the actor's mean log-std over `obs_sample` stands in.
    """
    p = host_actor_params(state)
    _, log_std = actor_heads(trunk(np.asarray(obs_sample, np.float32), p["hidden"], ACTIVATIONS["tanh"]),
                             p["mean"], p["log_std"])
    scale = np.diag(np.asarray(p["act_scale"], np.float32).reshape(-1))
    return mlp_to_cs285([*p["hidden"], p["mean"]], (scale, p["act_bias"]), log_std.mean(0), "tanh")
