"""The numpy forward pass of a dense MLP, shared by the student's host actor, the expert's numpy path
and the SAC actor (acting and export), with the flax-params -> layer-list conversion they all use.

numpy only (no JAX), so rollout workers can run policies without importing JAX.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Layer = tuple[np.ndarray, np.ndarray]

_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805
# numpy twins of bcjax.policy.ACTIVATIONS (the CS285 experts' "lrelu" is leaky_relu).
NP_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0))),
    "softplus": lambda x: np.logaddexp(0, x),
    "identity": lambda x: x,
}


def dense(p: dict[str, Any]) -> Layer:
    """A flax Dense layer's params as (W, b)."""
    return np.asarray(p["kernel"]), np.asarray(p["bias"])


def hidden_layers(p: dict[str, Any]) -> list[Layer]:
    """The layers named hidden_0, hidden_1, ... (bcjax.policy.MLPPolicy and bcjax.sac.Actor), in order."""
    layers = []
    while f"hidden_{len(layers)}" in p:
        layers.append(dense(p[f"hidden_{len(layers)}"]))
    return layers


def hidden_forward(x: np.ndarray, hidden: Sequence[Layer], act: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """act(x W + b) through `hidden`."""
    # np.dot, not @: on these tiny matrices the matmul ufunc's dispatch costs twice as much.
    for w, b in hidden:
        x = act(np.dot(x, w) + b)
    return x


def linear(x: np.ndarray, layer: Layer) -> np.ndarray:
    return np.dot(x, layer[0]) + layer[1]


def mlp_forward(x: np.ndarray, hidden: Sequence[Layer], out: Layer, act: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """act(x W + b) through `hidden`, then the linear `out` layer."""
    return linear(hidden_forward(x, hidden, act), out)
