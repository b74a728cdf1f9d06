"""IQM and bootstrap intervals against hand-computed values and large-sample theory."""

import numpy as np

from bcjax.stats import bootstrap_ci, iqm, summarize


def test_iqm_hand_computed():
    assert iqm(np.arange(1, 9)) == 4.5  # middle four of 1..8: 3, 4, 5, 6
    assert iqm([10, 1, 1000, 2, 3]) == 5.0  # n=5 drops one each end: mean of 2, 3, 10
    assert iqm([7.0]) == 7.0


def test_bootstrap_ci_of_mean_matches_normal_theory():
    x = np.random.default_rng(0).normal(10.0, 2.0, size=400)
    lo, hi = bootstrap_ci(x, np.mean, n_resamples=4000)
    half = 1.96 * x.std() / np.sqrt(len(x))  # the CLT interval
    assert abs((hi - lo) / 2 - half) < 0.1 * half
    assert lo < x.mean() < hi


def test_constant_sample_and_summary():
    assert bootstrap_ci(np.full(5, 3.0)) == (3.0, 3.0)
    s = summarize([1, 2, 3, 4, 100])
    assert s["mean"] == 22.0 and s["iqm"] == 3.0 and s["iqm_ci_low"] <= 3.0 <= s["iqm_ci_high"]
