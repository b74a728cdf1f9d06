"""The one MLP description and its forward pass, with no JAX: rollout workers import only this.

An `MLPSpec` and a params tree in flax's layout ({"params": {"hidden_0": {"kernel", "bias"}, ..., "out",
"log_std", "obs_mean", "obs_std"}}) are the student (bcjax.core.model.MLPPolicy) and a CS285 expert
(bcjax.data.expert) alike; the SAC actor shares `trunk`. `forward` is written once over an array module:
numpy runs it here (`NumpyMLP`, a few microseconds per env step; a row's bits do not depend on its batch),
bcjax.core.model.apply traces it with jax.numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from bcjax.core.adapters import obs_map

Layer = tuple[Any, Any]  # (kernel, bias): numpy arrays, or JAX arrays inside a trace

_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805
# The one activation table, name -> numpy function; the JAX apply runs jax.nn's function of the same name.
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0))),
    "softplus": lambda x: np.logaddexp(0, x),
    "identity": lambda x: x,
}


class MLPSpec(NamedTuple):
    """What an MLP is besides its params: the student's and a CS285 expert's."""

    hidden: tuple[int, ...]  # hidden layer sizes
    act_dim: int  # output size
    activation: str = "tanh"  # a key of ACTIVATIONS
    discrete: bool = False  # categorical logits; else a Gaussian mean, with a state-independent log_std param
    normalize_obs: bool = False  # the params' obs_mean / obs_std standardise the input
    fit_input: bool = False  # CS285's input: float32, zero-padded or truncated to the first layer's size
    task: str | None = None  # observations of this task are first mapped to the v4 layout (bcjax.core.adapters)


class Net(NamedTuple):
    """An MLP's params in the order `forward` reads them."""

    hidden: list[Layer]
    out: Layer
    norm: tuple[Any, Any] | None  # (obs_mean, obs_std), where the spec normalises


def dense(p: dict[str, Any]) -> Layer:
    """A flax Dense layer's params as (kernel, bias)."""
    return p["kernel"], p["bias"]


def hidden_layers(p: dict[str, Any]) -> list[Layer]:
    """The layers named hidden_0, hidden_1, ... of a params dict, in order."""
    layers = []
    while f"hidden_{len(layers)}" in p:
        layers.append(dense(p[f"hidden_{len(layers)}"]))
    return layers


def net(spec: MLPSpec, params: dict[str, Any]) -> Net:
    p = params["params"]
    return Net(hidden_layers(p), dense(p["out"]),
               (p["obs_mean"], p["obs_std"]) if spec.normalize_obs else None)


def linear(x: Any, layer: Layer, xp: Any = np) -> Any:
    w, b = layer
    if xp is np:
        # Each row as a one-row product (a stack of them): BLAS gives a row other bits in a batch of another size
        # or at another position, and a rollout's actions must not depend on how many rows act together. A
        # kernel stacked over K seeds, (K, d, h), serves the K seeds' rows (K, n, d).
        return np.matmul(x[..., None, :], w if w.ndim == 2 else w[:, None])[..., 0, :] + b
    return (xp.matmul if w.ndim == 3 else xp.dot)(x, w) + b


def trunk(x: Any, hidden: Sequence[Layer], act: Callable[[Any], Any], xp: Any = np) -> Any:
    """act(x W + b) through the hidden layers."""
    for layer in hidden:
        x = act(linear(x, layer, xp))
    return x


def forward(spec: MLPSpec, n: Net, obs: Any, act: Callable[[Any], Any], xp: Any = np) -> Any:
    """The output (action mean or logits) for a (B, obs_dim) batch: input adapter, normalisation, trunk, out."""
    x = obs
    obs_to_v4 = obs_map(spec.task) if spec.task else None
    if obs_to_v4 is not None:
        x = obs_to_v4(x, xp)
    if spec.fit_input:  # as the homework does (Ant: 27 -> 111)
        x = xp.asarray(x, xp.float32)
        in_dim, d = (n.hidden or [n.out])[0][0].shape[0], x.shape[-1]
        x = xp.pad(x, ((0, 0), (0, in_dim - d))) if d < in_dim else x[:, :in_dim]
    if n.norm is not None:
        x = (x - n.norm[0]) / n.norm[1]
    return linear(trunk(x, n.hidden, act, xp), n.out, xp)


def merge_members(params: dict[str, Any], members: int) -> dict[str, Any]:
    """Stacked params of K * E policies (member e of policy k at index k * E + e) as K stacked policies that each
    act with their E members' mean output: one MLP E times as wide, whose hidden kernels are block-diagonal (a
    member's units see only its own units), whose output kernel is the members' stacked and divided by E. An
    ensemble is then an ordinary MLP to every consumer (rollouts, video, reloads). Its log_std is the members'
    mean (it samples with their geometric-mean sigma); its obs statistics are member 0's (all members share a buffer)."""
    if members == 1:
        return params
    split = lambda x: np.asarray(x).reshape(-1, members, *x.shape[1:])  # noqa: E731 - (K * E, ...) -> (K, E, ...)
    merged = {}
    for i, (w, b) in enumerate(hidden_layers(params["params"])):
        k, e, d, h = split(w).shape
        if i == 0:  # every member reads the same input: their kernels side by side
            wide = split(w).transpose(0, 2, 1, 3).reshape(k, d, e * h)
        else:  # member e's kernel in block (e, e), zeros elsewhere
            wide = np.zeros((k, e, d, e, h), w.dtype)
            wide[:, np.arange(e), :, np.arange(e)] = np.moveaxis(split(w), 1, 0)
            wide = wide.reshape(k, e * d, e * h)
        merged[f"hidden_{i}"] = {"kernel": wide, "bias": split(b).reshape(k, e * h)}
    w, b = (split(x) for x in dense(params["params"]["out"]))
    w = w.reshape(len(w), -1, w.shape[-1]) / members if merged else w.mean(1)  # (no hidden layer: mean kernel)
    merged["out"] = {"kernel": w, "bias": b.mean(1)}
    for name, v in params["params"].items():
        if not isinstance(v, dict):  # log_std, obs_mean, obs_std
            merged[name] = split(v).mean(1) if name == "log_std" else split(v)[:, 0]
    return {"params": merged}


def member_mean(tree: dict[str, Any], members: int) -> dict[str, Any]:
    """Per-policy values (K * E, ...) as the mean over each policy's E members (K, ...)."""
    if members == 1:
        return tree
    return {name: np.asarray(v).reshape(-1, members, *np.shape(v)[1:]).mean(1) for name, v in tree.items()}


class NumpyMLP:
    """The MLP as a policy in numpy, for a (B, obs_dim) batch: its mode (the mean, or the largest logit)
    without `rng`, else a sample. Picklable and JAX-free, so a rollout worker can run it (the student,
    the expert of beta-mixed DAgger)."""

    def __init__(self, spec: MLPSpec, params: dict[str, Any], rng: np.random.Generator | None = None) -> None:
        self.spec, self.net, self.rng = spec, net(spec, params), rng  # params: numpy leaves
        self.std = None if spec.discrete else np.exp(params["params"]["log_std"])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        out = forward(self.spec, self.net, obs, ACTIVATIONS[self.spec.activation])
        if self.spec.discrete:
            if self.rng is not None:
                out = out + self.rng.gumbel(size=out.shape)  # Gumbel-max: a categorical sample
            return np.argmax(out, axis=-1)
        if self.rng is None:
            return out
        return out + self.std * self.rng.standard_normal(out.shape, dtype=np.float32)
