"""CS285 expert policies: load the pickle into the student's MLP description and params, and write one."""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bcjax.core.mlp import MLPSpec, NumpyMLP
from bcjax.core.model import apply
from bcjax.data.files import write_atomic
from bcjax.data.safe_pickle import as_array, load_pickle
from bcjax.errors import BcjaxError

CS285_ACTIVATIONS = {"tanh": "tanh", "lrelu": "leaky_relu"}  # CS285's nonlin_type -> bcjax.core.mlp.ACTIVATIONS

# Relabelling runs on batches of varying length; padding them to whole chunks
# keeps one compiled shape for the whole run.
_CHUNK = 4096


class ExpertPolicy:
    """A CS285 expert as the student's MLP (bcjax.core.mlp): the numpy apply acts per env step
    (`mean_action_np`: picklable and JAX-free, so rollout workers run it for beta-mixing) and a
    call relabels a batch with the JAX apply, one jitted call per 4096 rows."""

    def __init__(self, spec: MLPSpec, params: dict[str, Any]) -> None:
        self.spec, self.params = spec, params  # flax's layout, float32 numpy leaves
        self.obs_dim, self.act_dim = int(params["params"]["obs_mean"].shape[-1]), spec.act_dim
        self.mean_action_np = NumpyMLP(spec, params)
        self._fn = jax.jit(partial(apply, spec))

    def for_task(self, env_name: str) -> ExpertPolicy:
        """This expert reading `env_name`'s observations (mapped to the v4 layout where a v5 task changed it)."""
        return ExpertPolicy(self.spec._replace(task=env_name), self.params)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Mean actions for a (B, obs_dim) batch; obs of another size is padded or truncated."""
        obs = np.asarray(obs, np.float32)
        padded = np.concatenate([obs, np.zeros((-len(obs) % _CHUNK, obs.shape[1]), np.float32)])
        chunks = [np.asarray(self._fn(self.params, c)) for c in np.split(padded, len(padded) // _CHUNK)]
        return np.concatenate(chunks)[: len(obs)]


def _get(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise BcjaxError(f"{where} is not a CS285 expert policy: missing '{key}' (give a CS285 expert .pkl)")
    return d[key]


def _vector(d: Any, key: str, where: str, dtype: type = np.float32) -> np.ndarray:
    """A finite real array of `d[key]`, flattened, in `dtype`."""
    return as_array(_get(d, key, where), f"{where}: {key}", dtype=dtype).reshape(-1)


def _affine(d: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    layer = _get(d, "AffineLayer", where)
    w = as_array(_get(layer, "W", where), f"{where}: W", 2, np.float32)
    b = _vector(layer, "b", where)
    if w.shape[1] != b.shape[0]:
        raise BcjaxError(f"{where}: W {w.shape} and b {b.shape} do not fit together")
    return w, b


def _layer_order(name: str) -> tuple[int, str]:
    # "layer_10" sorts after "layer_2".
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else -1, name)


def expert_params_from_dict(data: Any, where: str) -> tuple[MLPSpec, dict[str, Any]]:
    """Validate a CS285 expert dict and turn it into the MLP's (spec, params)."""
    nonlin = _get(data, "nonlin_type", where)
    if nonlin not in CS285_ACTIVATIONS:
        raise BcjaxError(f"{where}: unknown nonlin_type {nonlin!r}; expected one of {sorted(CS285_ACTIVATIONS)}")
    pol = _get(data, "GaussianPolicy", where)
    std = _get(_get(pol, "obsnorm", where), "Standardizer", where)
    mean, meansq = _vector(std, "mean_1_D", where, np.float64), _vector(std, "meansq_1_D", where, np.float64)
    if mean.shape != meansq.shape:
        raise BcjaxError(f"{where}: obsnorm mean {mean.shape} and meansq {meansq.shape} differ in size")
    obs_std = np.sqrt(np.maximum(0.0, meansq - mean**2)) + 1e-6
    net = _get(_get(pol, "hidden", where), "FeedforwardNet", where)
    if not isinstance(net, dict):
        raise BcjaxError(f"{where}: hidden FeedforwardNet should be a dict of layers")
    keys = sorted(net, key=_layer_order)
    hidden = [_affine(net[k], f"{where}: hidden {k}") for k in keys]
    out = _affine(_get(pol, "out", where), f"{where}: out")
    log_std = _vector(pol, "logstdevs_1_Da", where)
    # Every layer must take what the one before gives (the observation size for the first).
    gives = mean.shape[0]
    for name, (w, _) in zip([f"hidden {k}" for k in keys] + ["out"], hidden + [out]):
        if w.shape[0] != gives:
            raise BcjaxError(f"{where}: layer sizes do not chain ({name} takes {w.shape[0]} inputs, gets {gives})")
        gives = w.shape[1]
    if log_std.shape[0] != out[1].shape[0]:
        raise BcjaxError(f"{where}: logstdevs_1_Da has {log_std.shape[0]} entries for {out[1].shape[0]} actions")
    layers = {f"hidden_{i}": {"kernel": w, "bias": b} for i, (w, b) in enumerate(hidden)}
    params = {"obs_mean": mean.astype(np.float32), "obs_std": obs_std.astype(np.float32), **layers,
              "out": {"kernel": out[0], "bias": out[1]}, "log_std": log_std}
    spec = MLPSpec(tuple(w.shape[1] for w, _ in hidden), out[0].shape[1], CS285_ACTIVATIONS[nonlin],
                   normalize_obs=True, fit_input=True)
    return spec, {"params": params}


def load_expert(path: str | Path, flag: str = "--expert_policy_file") -> ExpertPolicy:
    """Load a CS285 expert pickle (restricted unpickler) as an ExpertPolicy."""
    data = load_pickle(path, "expert policy", flag)
    return ExpertPolicy(*expert_params_from_dict(data, f"expert policy {path}"))


def mlp_to_cs285(hidden: Sequence[tuple[np.ndarray, np.ndarray]], out: tuple[np.ndarray, np.ndarray],
                 log_std: np.ndarray, nonlin: str = "tanh") -> dict[str, Any]:
    """A CS285 expert dict for the MLP obs -> nonlin hidden layers -> linear `out`, with an
    identity observation standardizer (the loader then computes exactly this network; `save_expert`
    checks it, `nonlin` included)."""
    obs_dim = (hidden[0] if hidden else out)[0].shape[0]

    def affine(w: np.ndarray, b: np.ndarray) -> dict:
        return {"AffineLayer": {"W": np.asarray(w, np.float32), "b": np.asarray(b, np.float32).reshape(1, -1)}}

    return {
        "nonlin_type": nonlin,
        "GaussianPolicy": {
            # The loader's std is sqrt(meansq - mean^2) + 1e-6: this meansq makes it exactly 1.
            "obsnorm": {"Standardizer": {"mean_1_D": np.zeros((1, obs_dim)),
                                         "meansq_1_D": np.full((1, obs_dim), (1 - 1e-6) ** 2),
                                         "count": np.asarray(0.0)}},
            # CS285 names hidden layers layer_0, layer_2, ... (odd indices were the nonlinearities).
            "hidden": {"FeedforwardNet": {f"layer_{2 * i}": affine(w, b) for i, (w, b) in enumerate(hidden)}},
            "out": affine(*out),
            "logstdevs_1_Da": np.asarray(log_std, np.float64).reshape(1, -1),
        },
    }


def save_expert(data: dict[str, Any], path: str | Path) -> None:
    """Write a CS285 expert dict (checked by the loader first) as a pickle, atomically."""
    expert_params_from_dict(data, f"expert policy {path}")
    write_atomic(path, pickle.dumps(data, protocol=4))
