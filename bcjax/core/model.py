"""The MLP policy (CS285 MLPPolicySL): Gaussian with a state-independent log_std, or categorical.

Pure functions over a params pytree: `apply` gives the mean (or logits),
and `log_prob`. `host_actor` samples or takes the mode, running the same network in numpy for
per-step rollouts, where a jitted call costs more than the physics step.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bcjax.core.numpy_policy import PolicySpec, numpy_actor

Params = Any

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "leaky_relu": nn.leaky_relu,
    "sigmoid": nn.sigmoid,
    "selu": nn.selu,
    "softplus": nn.softplus,
    "identity": lambda x: x,
}


def _dense(features: int, fan_in: int, init: str, name: str) -> nn.Dense:
    """A Dense layer initialised as the homework's `nn.Linear` ("torch": weights and biases uniform in
    ±1/sqrt(fan_in)) or with flax's defaults ("flax": lecun-normal weights, zero biases)."""
    if init == "flax":
        return nn.Dense(features, name=name)
    bound = 1.0 / math.sqrt(fan_in)

    def bias_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    # variance_scaling(1/3, fan_in, uniform) is uniform in ±sqrt(3 * (1/3) / fan_in) = ±1/sqrt(fan_in).
    return nn.Dense(features, name=name, kernel_init=nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                    bias_init=bias_init)


class MLPPolicy(nn.Module):
    """`n_layers` hidden layers of `size` units, identity output: the action mean (or logits)."""

    act_dim: int
    n_layers: int = 2
    size: int = 64
    activation: str = "tanh"
    discrete: bool = False
    init_scheme: str = "torch"  # bcjax.config.INITS
    normalize_obs: bool = False  # standardise the input with the params' obs_mean / obs_std (set from the buffer)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs
        if self.normalize_obs:
            # Params so checkpoints carry them; their gradient is stopped, so Adam leaves them unchanged.
            mean = self.param("obs_mean", nn.initializers.zeros, (obs.shape[-1],))
            std = self.param("obs_std", nn.initializers.ones, (obs.shape[-1],))
            x = (x - jax.lax.stop_gradient(mean)) / jax.lax.stop_gradient(std)
        for i in range(self.n_layers):
            x = ACTIVATIONS[self.activation](_dense(self.size, x.shape[-1], self.init_scheme, f"hidden_{i}")(x))
        out = _dense(self.act_dim, x.shape[-1], self.init_scheme, "out")(x)
        if not self.discrete:
            self.param("log_std", nn.initializers.zeros, (self.act_dim,))
        return out


OBS_STD_FLOOR = 1e-3  # a constant observation dim divides by this, not by zero


def obs_stats(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (floored) of observation rows, as float32 for the policy's params."""
    obs = np.asarray(obs, np.float64)
    return obs.mean(axis=0).astype(np.float32), np.maximum(obs.std(axis=0), OBS_STD_FLOOR).astype(np.float32)


def init_params(policy: MLPPolicy, key: jax.Array, obs_dim: int) -> Params:
    return policy.init(key, jnp.zeros((1, obs_dim), jnp.float32))


def apply(policy: MLPPolicy, params: Params, obs: jax.Array) -> jax.Array:
    """The action mean (continuous) or the logits (discrete)."""
    return policy.apply(params, obs)


def log_prob(policy: MLPPolicy, params: Params, obs: jax.Array, act: jax.Array) -> jax.Array:
    """Log-likelihood of `act` per row: Gaussian summed over action dims, or categorical."""
    out = apply(policy, params, obs)
    if policy.discrete:
        logp = jax.nn.log_softmax(out)
        return jnp.take_along_axis(logp, act.astype(jnp.int32)[:, None], axis=-1)[:, 0]
    log_std = params["params"]["log_std"]
    z = (act - out) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)


def policy_spec(policy: MLPPolicy) -> PolicySpec:
    return PolicySpec(policy.n_layers, policy.activation, policy.discrete, policy.normalize_obs)


def host_actor(policy: MLPPolicy, params: Params, rng: np.random.Generator | None) -> Callable[[np.ndarray], np.ndarray]:
    """The policy as a numpy function of a (B, obs_dim) batch: samples with `rng`, or the mode if None.

    The params are copied to the host once, so each env step costs a few
    microseconds instead of a device dispatch.
    """
    return numpy_actor(policy_spec(policy), jax.tree.map(np.asarray, jax.device_get(params)), rng)
