"""The rliable-backed statistics against hand-computed values and an independent numpy bootstrap."""

import numpy as np
import pytest

from bcjax.run.stats import iqm, iqm_ci, performance_profiles, summarize


def _iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    # Reference: sort, drop floor(25%) at each end, average (per row of resamples).
    x = np.sort(x, axis=axis)
    cut = int(np.floor(0.25 * x.shape[axis]))
    return x[..., cut:x.shape[axis] - cut].mean(axis=axis)


def _numpy_bootstrap(scores: np.ndarray, reps: int, seed: int = 1) -> tuple[float, float]:
    """Percentile bootstrap of the IQM of all scores, resampling runs within each task (column)."""
    rng = np.random.default_rng(seed)
    n, m = scores.shape
    idx = rng.integers(0, n, size=(reps, n, m))
    resampled = np.take_along_axis(np.broadcast_to(scores, (reps, n, m)), idx, axis=1).reshape(reps, -1)
    lo, hi = np.quantile(_iqm(resampled), [0.025, 0.975])
    return float(lo), float(hi)


def test_iqm_hand_computed():
    assert iqm(np.arange(1, 9)) == 4.5  # middle four of 1..8: 3, 4, 5, 6
    assert iqm([10, 1, 1000, 2, 3]) == 5.0  # n=5 drops one each end: mean of 2, 3, 10
    assert iqm([7.0]) == 7.0


def test_iqm_interval_matches_an_independent_bootstrap():
    x = np.random.default_rng(0).normal(10.0, 2.0, size=40)
    lo, hi = iqm_ci(x, reps=4000)
    ref_lo, ref_hi = _numpy_bootstrap(x.reshape(-1, 1), reps=20000)
    width = ref_hi - ref_lo
    assert abs(lo - ref_lo) < 0.1 * width and abs(hi - ref_hi) < 0.1 * width
    assert lo < iqm(x) < hi


def test_stratified_interval_resamples_within_tasks():
    # Two tasks on very different scales: resampling across tasks would mix them and widen the interval.
    rng = np.random.default_rng(1)
    scores = np.stack([rng.normal(0.2, 0.05, 10), rng.normal(0.9, 0.05, 10)], axis=1)
    lo, hi = iqm_ci(scores, reps=4000)
    ref_lo, ref_hi = _numpy_bootstrap(scores, reps=20000)
    width = ref_hi - ref_lo
    assert abs(lo - ref_lo) < 0.15 * width and abs(hi - ref_hi) < 0.15 * width


def test_constant_sample_and_summary():
    assert iqm_ci(np.full(5, 3.0), reps=200) == (3.0, 3.0)
    s = summarize([1, 2, 3, 4, 100], reps=500)
    assert s["n"] == 5 and s["mean"] == 22.0 and s["iqm"] == 3.0 and s["iqm_ci_low"] <= 3.0 <= s["iqm_ci_high"]
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4, 100]))


def test_performance_profile_is_the_fraction_of_runs_above_tau():
    scores = {"a": np.array([[0.1, 0.5], [0.7, 0.9], [1.0, 0.3]])}  # 3 runs × 2 tasks
    taus = np.array([0.0, 0.4, 0.8, 1.0])
    profiles, bands = performance_profiles(scores, taus, reps=200)
    assert profiles["a"] == pytest.approx([1.0, 4 / 6, 2 / 6, 0.0])  # strictly above tau
    assert bands["a"].shape == (2, 4) and np.all(bands["a"][0] <= profiles["a"] + 1e-12)
