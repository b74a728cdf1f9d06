"""The BC loss against closed-form negative log-likelihoods on fixed numbers."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from bcjax.core.loss import nll_loss
from bcjax.core.model import MLPPolicy, init_params


def _params_with(policy, obs_dim, out_bias, log_std=None):
    """Zero weights so the network outputs exactly `out_bias` whatever the input."""
    params = jax.tree.map(jnp.zeros_like, init_params(policy, jax.random.PRNGKey(0), obs_dim))
    p = dict(params["params"])
    p["out"] = {"kernel": p["out"]["kernel"], "bias": jnp.asarray(out_bias, jnp.float32)}
    if log_std is not None:
        p["log_std"] = jnp.asarray(log_std, jnp.float32)
    return {"params": p}


def test_gaussian_nll_closed_form():
    policy = MLPPolicy(act_dim=2, n_layers=1, size=4)
    mu, log_std = np.array([0.5, -1.0]), np.array([0.0, math.log(2.0)])
    params = _params_with(policy, 3, mu, log_std)
    obs = np.zeros((2, 3), np.float32)
    acts = np.array([[1.0, 1.0], [0.5, -3.0]], np.float32)
    # -log N(a; mu, sigma) = 0.5 ((a - mu)/sigma)^2 + log sigma + 0.5 log(2 pi), summed over dims
    sigma = np.array([1.0, 2.0])
    per_row = [sum(0.5 * ((a - m) / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi)
                   for a, m, s in zip(row, mu, sigma)) for row in acts]
    expected = np.mean(per_row)
    # by hand: row 0 squares 0.125 + 0.5, row 1 squares 0 + 0.5; each row adds log 2 + log 2pi
    assert np.isclose(expected, (0.625 + 0.5) / 2 + math.log(2) + math.log(2 * math.pi))
    assert np.isclose(float(nll_loss(policy, params, obs, acts)), expected, rtol=1e-6)


def test_categorical_nll_closed_form():
    policy = MLPPolicy(act_dim=3, n_layers=2, size=4, discrete=True)
    logits = np.array([1.0, 2.0, 0.0])
    params = _params_with(policy, 4, logits)
    assert "log_std" not in params["params"]
    obs = np.zeros((3, 4), np.float32)
    acts = np.array([0, 1, 1])
    log_z = math.log(math.e**1 + math.e**2 + 1)
    expected = np.mean([log_z - 1.0, log_z - 2.0, log_z - 2.0])
    assert np.isclose(float(nll_loss(policy, params, obs, acts)), expected, rtol=1e-6)
