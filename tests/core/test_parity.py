"""Parity with the homework's PyTorch student: its initialisation, its minibatches, one update by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.core.buffer import Buffer
from bcjax.core.model import MLPPolicy
from bcjax.core.update import create_train_states, fit, minibatch_indices


def _layers(params) -> list[tuple[np.ndarray, np.ndarray]]:
    p = params["params"]
    names = sorted(k for k in p if k.startswith("hidden_")) + ["out"]
    return [(np.asarray(p[n]["kernel"]), np.asarray(p[n]["bias"])) for n in names]


def test_torch_init_is_uniform_in_one_over_sqrt_fan_in():
    # nn.Linear: kaiming_uniform(a=sqrt(5)) weights and uniform biases, both in +-1/sqrt(fan_in).
    policy = MLPPolicy(act_dim=6, n_layers=2, size=256)
    states = create_train_states(policy, jax.random.PRNGKey(0)[None], 40, 5e-3)
    layers = _layers(jax.tree.map(lambda x: x[0], states.params))
    for (w, b), fan_in in zip(layers, (40, 256, 256)):
        bound = 1 / math.sqrt(fan_in)
        for x in (w, b):
            assert np.abs(x).max() <= bound
        assert np.abs(w).max() > 0.98 * bound
        assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # the std of U(-a, a) is a/sqrt(3)
        assert abs(w.mean()) < 0.05 * bound
    assert np.all(np.asarray(states.params["params"]["log_std"]) == 0)


def test_flax_init_is_still_available():
    policy = MLPPolicy(act_dim=3, n_layers=1, size=512, init_scheme="flax")
    states = create_train_states(policy, jax.random.PRNGKey(0)[None], 100, 5e-3)
    (w, b), _ = _layers(jax.tree.map(lambda x: x[0], states.params))
    assert np.all(b == 0) and w.std() == pytest.approx(1 / math.sqrt(100), rel=0.1)  # lecun normal


def _numpy_adam_step(layers, log_std, obs, acs, lr):
    """The homework's update in numpy: Gaussian NLL summed over dims, mean over the batch, one Adam step."""
    hs = [obs]
    for w, b in layers[:-1]:
        hs.append(np.tanh(hs[-1] @ w + b))
    mu = hs[-1] @ layers[-1][0] + layers[-1][1]
    var = np.exp(2 * log_std)
    n = len(obs)
    loss = np.mean(np.sum(0.5 * (acs - mu) ** 2 / var + log_std + 0.5 * math.log(2 * math.pi), axis=1))
    g_log_std = np.mean(1 - (acs - mu) ** 2 / var, axis=0)
    d = -(acs - mu) / var / n  # dL/dmu
    grads = []
    for i in range(len(layers) - 1, -1, -1):
        w, _ = layers[i]
        grads.append((hs[i].T @ d, d.sum(0)))
        if i:
            d = (d @ w.T) * (1 - hs[i] ** 2)
    grads.reverse()

    def adam(x, g):  # the first Adam step: m_hat = g, v_hat = g^2
        return x - lr * g / (np.abs(g) + 1e-8)

    return loss, [(adam(w, gw), adam(b, gb)) for (w, b), (gw, gb) in zip(layers, grads)], adam(log_std, g_log_std)


def test_one_update_matches_a_numpy_recomputation_of_the_homework():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(32, 11)).astype(np.float32)
    acs = rng.uniform(-1, 1, (32, 3)).astype(np.float32)
    policy = MLPPolicy(act_dim=3, n_layers=2, size=16)
    states = create_train_states(policy, jax.random.PRNGKey(1)[None], 11, 5e-3)
    before = _layers(jax.tree.map(lambda x: np.asarray(x[0], np.float64), states.params))
    log_std = np.asarray(states.params["params"]["log_std"][0], np.float64) + 0
    # A minibatch of all 32 rows (distinct rows from 32): the full batch, in some order.
    buffer = Buffer({"observation": jnp.asarray(obs[None]), "action": jnp.asarray(acs[None])},
                    jnp.asarray([32], jnp.int32), jnp.zeros(1, jnp.int32))
    new, metrics = fit(policy, 32, 1, states, buffer, jax.random.PRNGKey(2)[None])
    loss, want_layers, want_log_std = _numpy_adam_step(before, log_std, obs.astype(np.float64), acs, 5e-3)
    assert float(metrics["loss"][0, 0]) == pytest.approx(loss, rel=1e-5)
    for (w, b), (ww, wb) in zip(_layers(jax.tree.map(lambda x: x[0], new.params)), want_layers):
        np.testing.assert_allclose(w, ww, atol=2e-6)
        np.testing.assert_allclose(b, wb, atol=2e-6)
    np.testing.assert_allclose(np.asarray(new.params["params"]["log_std"][0]), want_log_std, atol=2e-6)


def test_minibatches_are_distinct_rows_drawn_uniformly():
    draw = jax.jit(jax.vmap(lambda k: minibatch_indices(k, jnp.int32(12), 5)))
    idx, weight = map(np.asarray, draw(jax.random.split(jax.random.PRNGKey(0), 24000)))
    assert all(len(set(row)) == 5 for row in idx) and np.all(weight == 1)
    assert idx.min() == 0 and idx.max() == 11
    # permutation(12)[:5]: each row is in a minibatch with probability 5/12, each pair with 5*4/(12*11).
    counts = np.bincount(idx.ravel(), minlength=12)
    expected = 24000 * 5 / 12
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected))
    pair = np.mean([(0 in r) and (1 in r) for r in idx])
    assert pair == pytest.approx(20 / 132, abs=0.01)


def test_a_minibatch_larger_than_the_buffer_takes_every_row_once():
    idx, weight = minibatch_indices(jax.random.PRNGKey(3), jnp.int32(3), 5)
    assert sorted(np.asarray(idx)[np.asarray(weight) == 1].tolist()) == [0, 1, 2]
    assert np.asarray(weight).sum() == 3


def test_runs_with_different_seeds_never_share_a_stream():
    from bcjax.run.driver import seed_index_keys

    keys = np.concatenate([np.asarray(jax.random.key_data(seed_index_keys(s, 6))) for s in range(12)])
    assert len({tuple(k) for k in keys}) == 12 * 6  # --seed 1's index 1 is not --seed 2's index 0
