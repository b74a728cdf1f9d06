"""Aggregate statistics across seeds through rliable (Agarwal et al. 2021): mean ± std, interquartile
mean (scipy's 25% trimmed mean, rliable's own definition) with a stratified-bootstrap confidence
interval, and performance profiles across tasks.

rliable needs the `stats` extra (`pip install -e '.[stats]'`, which pins the arch and pandas
versions its bootstrap works with).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import trim_mean

from bcjax.errors import BcjaxError

BOOTSTRAP_REPS = 10_000
CONFIDENCE = 0.95


def _rliable():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from rliable import library
    except ImportError as e:
        raise BcjaxError(f"statistics need rliable ({e}): pip install -e '.[stats]'") from None
    return library


def iqm(x: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end) of all values."""
    return float(trim_mean(np.asarray(x, np.float64), proportiontocut=0.25, axis=None))


def iqm_ci(scores: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the IQM of `scores` (runs × tasks), resampling runs within each task."""
    scores = np.asarray(scores, np.float64)
    scores = scores.reshape(-1, 1) if scores.ndim == 1 else scores
    with warnings.catch_warnings():  # arch's RandomState deprecation notice
        warnings.simplefilter("ignore")
        _, ci = _rliable().get_interval_estimates({"x": scores}, lambda s: np.array([iqm(s)]), reps=reps,
                                                  confidence_interval_size=CONFIDENCE, random_state=np.random.RandomState(seed))
    lo, hi = ci["x"][:, 0]
    return float(lo), float(hi)


def summarize(x: np.ndarray, reps: int = BOOTSTRAP_REPS) -> dict[str, float]:
    """Mean, std, IQM and its 95% bootstrap interval of per-seed values."""
    x = np.asarray(x, np.float64).ravel()
    lo, hi = iqm_ci(x, reps)
    return {"n": int(len(x)), "mean": float(x.mean()), "std": float(x.std()), "iqm": iqm(x), "iqm_ci_low": lo, "iqm_ci_high": hi}


def performance_profiles(scores: dict[str, np.ndarray], taus: np.ndarray, reps: int = 2000,
                         seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per method (runs × tasks of normalised scores): the fraction of runs scoring above each tau,
    and its 95% stratified-bootstrap band (2 × len(taus))."""
    library = _rliable()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # create_performance_profile cannot be seeded; this is its computation with a seeded bootstrap.
        return library.get_interval_estimates(scores, lambda s: library.score_distributions(s, taus), reps=reps,
                                              confidence_interval_size=CONFIDENCE, random_state=np.random.RandomState(seed))
