"""Aggregate statistics across seeds: mean ± std, interquartile mean, percentile-bootstrap intervals."""

from __future__ import annotations

from typing import Callable

import numpy as np


def iqm(x: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (the same 25% trimmed from each end)."""
    x = np.sort(np.asarray(x, np.float64).ravel())
    cut = int(np.floor(0.25 * len(x)))
    return float(x[cut:len(x) - cut].mean())


def bootstrap_ci(x: np.ndarray, stat: Callable[[np.ndarray], float] = iqm, level: float = 0.95,
                 n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `stat` over the values of `x` (resampled with replacement)."""
    x = np.asarray(x, np.float64).ravel()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))
    stats = np.array([stat(row) for row in x[idx]])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def summarize(x: np.ndarray) -> dict[str, float]:
    """Mean, std, IQM and its 95% bootstrap interval of per-seed values."""
    x = np.asarray(x, np.float64).ravel()
    lo, hi = bootstrap_ci(x)
    return {"n": int(len(x)), "mean": float(x.mean()), "std": float(x.std()), "iqm": iqm(x),
            "iqm_ci_low": lo, "iqm_ci_high": hi}
