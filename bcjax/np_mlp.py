"""The numpy forward pass of a dense MLP, shared by the student's host actor and the expert's numpy path.

numpy only (no JAX), so rollout workers can run policies without importing JAX.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Layer = tuple[np.ndarray, np.ndarray]


def mlp_forward(x: np.ndarray, hidden: Sequence[Layer], out: Layer, act: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """act(x W + b) through `hidden`, then the linear `out` layer."""
    # np.dot, not @: on these tiny matrices the matmul ufunc's dispatch costs twice as much.
    for w, b in hidden:
        x = act(np.dot(x, w) + b)
    return np.dot(x, out[0]) + out[1]
