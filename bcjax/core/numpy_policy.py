"""The MLP policy's forward pass in plain numpy, with no JAX: rollout workers import only this.

`numpy_actor` takes the policy's params as nested dicts of numpy arrays (flax's
layout: hidden_i / out / log_std) and its shape as a `PolicySpec`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from bcjax.core.np_mlp import NP_ACTIVATIONS, dense, hidden_layers, mlp_forward


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
    layers, out_layer = hidden_layers(p), dense(p["out"])
    act = NP_ACTIVATIONS[spec.activation]
    std = None if spec.discrete else np.exp(p["log_std"])

    norm = (p["obs_mean"], p["obs_std"]) if spec.normalize_obs else None

    def actor(obs: np.ndarray) -> np.ndarray:
        if norm is not None:
            obs = (obs - norm[0]) / norm[1]
        out = mlp_forward(obs, layers, out_layer, act)
        if spec.discrete:
            if rng is not None:
                out = out + rng.gumbel(size=out.shape)  # Gumbel-max: a categorical sample
            return np.argmax(out, axis=-1)
        if rng is None:
            return out
        return out + std * rng.standard_normal(out.shape, dtype=np.float32)

    return actor


EXPERT_NONLINEARITIES = {"tanh": NP_ACTIVATIONS["tanh"], "lrelu": NP_ACTIVATIONS["leaky_relu"]}  # CS285's names


class NumpyExpert:
    """A CS285 expert's mean action in plain numpy: picklable and JAX-free, so a rollout worker can run it
    (beta-mixed DAgger), and cheaper than a jitted call for the per-step batches of a rollout."""

    def __init__(self, params: dict[str, Any], nonlin: str, task: str | None = None) -> None:
        self.obs_mean, self.obs_std = np.asarray(params["obs_mean"]), np.asarray(params["obs_std"])
        self.hidden = [(np.asarray(w), np.asarray(b)) for w, b in params["hidden"]]
        self.out = tuple(np.asarray(x) for x in params["out"])
        self.nonlin, self.task = nonlin, task

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        from bcjax.core.adapters import obs_map

        obs = np.asarray(obs, np.float32)
        layout = obs_map(self.task) if self.task else None
        if layout is not None:
            obs = layout(obs)
        in_dim, d = self.obs_mean.shape[-1], obs.shape[-1]
        # Pad with zeros or truncate to the expert's input size, as the homework does (Ant: 27 -> 111).
        obs = np.pad(obs, ((0, 0), (0, in_dim - d))) if d < in_dim else obs[:, :in_dim]
        return mlp_forward((obs - self.obs_mean) / self.obs_std, self.hidden, self.out,
                           EXPERT_NONLINEARITIES[self.nonlin])

