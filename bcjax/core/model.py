"""The MLP in JAX: the student's flax module (its params and initialisers) and the one JAX apply.

The forward pass itself is bcjax.core.mlp's, traced here with jax.numpy; the same function runs in numpy
for per-step rollouts (`host_actor`), where a jitted call costs more than the physics step.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bcjax.core.mlp import ACTIVATIONS, Layer, MLPSpec, NumpyMLP, forward, net

Params = Any


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The JAX twin of an entry of the one activation table (bcjax.core.mlp.ACTIVATIONS): jax.nn's of that name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return getattr(jax.nn, name)


class DenseParams(nn.Module):
    """A Dense layer's params only, initialised as flax's nn.Dense ("flax": lecun-normal weights, zero biases)
    or the homework's nn.Linear ("torch": weights and biases uniform in ±1/sqrt(fan_in))."""

    features: int
    init_scheme: str = "flax"

    @nn.compact
    def __call__(self, fan_in: int) -> Layer:
        kernel_init, bias_init = nn.initializers.lecun_normal(), nn.initializers.zeros_init()
        if self.init_scheme != "flax":
            bound = 1.0 / math.sqrt(fan_in)
            # variance_scaling(1/3, fan_in, uniform) is uniform in ±sqrt(3 * (1/3) / fan_in) = ±1/sqrt(fan_in).
            kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
            bias_init = partial(jax.random.uniform, minval=-bound, maxval=bound)
        return (self.param("kernel", kernel_init, (fan_in, self.features), jnp.float32),
                self.param("bias", bias_init, (self.features,), jnp.float32))


class MLPPolicy(nn.Module):
    """The student (CS285 MLPPolicySL): `n_layers` hidden layers of `size` units, identity output: the action
    mean (with a state-independent log_std) or the logits."""

    act_dim: int
    n_layers: int = 2
    size: int = 64
    activation: str = "tanh"
    discrete: bool = False
    init_scheme: str = "torch"  # bcjax.config.INITS
    normalize_obs: bool = False  # standardise the input with the params' obs_mean / obs_std (set from the buffer)

    @property
    def spec(self) -> MLPSpec:
        return MLPSpec((self.size,) * self.n_layers, self.act_dim, self.activation, self.discrete, self.normalize_obs)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        # Declared in the order, with the names and initialisers, of older runs' checkpoints.
        d = obs.shape[-1]
        if self.normalize_obs:
            self.param("obs_mean", nn.initializers.zeros, (d,))
            self.param("obs_std", nn.initializers.ones, (d,))
        for i in range(self.n_layers):
            DenseParams(self.size, self.init_scheme, name=f"hidden_{i}")(d)
            d = self.size
        DenseParams(self.act_dim, self.init_scheme, name="out")(d)
        if not self.discrete:
            self.param("log_std", nn.initializers.zeros, (self.act_dim,))
        return apply(self, self.variables, obs)


def ensemble_policy(policy: MLPPolicy, members: int) -> MLPPolicy:
    """The policy `members` copies of `policy` act as, with bcjax.core.mlp.merge_members's params: `members` times as wide."""
    return policy if members == 1 else policy.clone(size=policy.size * members)


def apply(model: MLPPolicy | MLPSpec, params: Params, obs: jax.Array) -> jax.Array:
    """The one JAX apply (pure): the action mean (continuous) or the logits (discrete)."""
    spec = model if isinstance(model, MLPSpec) else model.spec
    n = net(spec, params)
    if n.norm is not None:  # params, so checkpoints carry them; their gradient is stopped, so Adam leaves them unchanged
        n = n._replace(norm=jax.lax.stop_gradient(n.norm))
    return forward(spec, n, obs, activation(spec.activation), jnp)


OBS_STD_FLOOR = 1e-3  # a constant observation dim divides by this, not by zero


def obs_stats(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (floored) of observation rows, as float32 for the policy's params."""
    obs = np.asarray(obs, np.float64)
    return obs.mean(axis=0).astype(np.float32), np.maximum(obs.std(axis=0), OBS_STD_FLOOR).astype(np.float32)


def init_params(policy: MLPPolicy, key: jax.Array, obs_dim: int) -> Params:
    return policy.init(key, jnp.zeros((1, obs_dim), jnp.float32))


def log_prob(model: MLPPolicy | MLPSpec, params: Params, obs: jax.Array, act: jax.Array) -> jax.Array:
    """Log-likelihood of `act` per row: Gaussian summed over action dims, or categorical."""
    out = apply(model, params, obs)
    if model.discrete:
        logp = jax.nn.log_softmax(out)
        return jnp.take_along_axis(logp, act.astype(jnp.int32)[:, None], axis=-1)[:, 0]
    log_std = params["params"]["log_std"]
    z = (act - out) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)


def host_actor(policy: MLPPolicy, params: Params, rng: np.random.Generator | None) -> Callable[[np.ndarray], np.ndarray]:
    """The policy as a numpy function of a (B, obs_dim) batch: samples with `rng`, or the mode if None.

    The params are copied to the host once, so each env step costs a few
    microseconds instead of a device dispatch.
    """
    return NumpyMLP(policy.spec, jax.tree.map(np.asarray, jax.device_get(params)), rng)
