"""The MLP policy's forward pass in plain numpy, with no JAX: rollout workers import only this.

`numpy_actor` takes the policy's params as nested dicts of numpy arrays (flax's
layout: hidden_i / out / log_std) and its shape as a `PolicySpec`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from bcjax.np_mlp import mlp_forward

_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805
NP_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0))),
    "softplus": lambda x: np.logaddexp(0, x),
    "identity": lambda x: x,
}


class PolicySpec(NamedTuple):
    """What the forward pass needs to know of an `MLPPolicy` besides its params."""

    n_layers: int
    activation: str
    discrete: bool
    normalize_obs: bool = False  # params hold obs_mean/obs_std, applied to the input


def numpy_actor(spec: PolicySpec, params: dict[str, Any],
                rng: np.random.Generator | None) -> Callable[[np.ndarray], np.ndarray]:
    """The policy as a numpy function of a (B, obs_dim) batch: samples with `rng`, or the mode if None.

    `params` is the flax variables dict ({"params": ...}) with numpy leaves.
    """
    p = params["params"]
    layers = [(p[f"hidden_{i}"]["kernel"], p[f"hidden_{i}"]["bias"]) for i in range(spec.n_layers)]
    w_out, b_out = p["out"]["kernel"], p["out"]["bias"]
    act = NP_ACTIVATIONS[spec.activation]
    std = None if spec.discrete else np.exp(p["log_std"])

    norm = (p["obs_mean"], p["obs_std"]) if spec.normalize_obs else None

    def actor(obs: np.ndarray) -> np.ndarray:
        if norm is not None:
            obs = (obs - norm[0]) / norm[1]
        out = mlp_forward(obs, layers, (w_out, b_out), act)
        if spec.discrete:
            if rng is not None:
                out = out + rng.gumbel(size=out.shape)  # Gumbel-max: a categorical sample
            return np.argmax(out, axis=-1)
        if rng is None:
            return out
        return out + std * rng.standard_normal(out.shape, dtype=np.float32)

    return actor
