"""The policy: the numpy host actor (what rollouts run) equals the flax network; its samples have the right statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.core.model import ACTIVATIONS, MLPPolicy, apply, host_actor, init_params
from bcjax.core.np_mlp import NP_ACTIVATIONS
from bcjax.run.config import ACTIVATION_NAMES


def test_activation_names_are_the_flags_choices():
    assert tuple(sorted(ACTIVATIONS)) == tuple(sorted(NP_ACTIVATIONS)) == ACTIVATION_NAMES


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_host_actor_matches_flax(activation):
    policy = MLPPolicy(act_dim=3, n_layers=2, size=16, activation=activation)
    params = init_params(policy, jax.random.PRNGKey(0), 5)
    obs = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32) * 3
    np.testing.assert_allclose(host_actor(policy, params, None)(obs), np.asarray(apply(policy, params, obs)),
                               rtol=1e-5, atol=1e-5)


def test_discrete_mode_and_host_actor():
    policy = MLPPolicy(act_dim=4, n_layers=1, size=8, discrete=True)
    params = init_params(policy, jax.random.PRNGKey(1), 3)
    obs = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    want = np.argmax(np.asarray(apply(policy, params, obs)), axis=-1)  # the mode: the largest logit
    np.testing.assert_array_equal(host_actor(policy, params, None)(obs), want)


def test_gaussian_sample_statistics():
    policy = MLPPolicy(act_dim=2, n_layers=1, size=8)
    params = init_params(policy, jax.random.PRNGKey(2), 3)
    params["params"]["log_std"] = jnp.log(jnp.array([0.5, 2.0]))
    obs = np.ones((20000, 3), np.float32)
    mean = np.asarray(apply(policy, params, obs[:1]))[0]
    draws = host_actor(policy, params, np.random.default_rng(3))(obs)
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(draws.std(0), [0.5, 2.0], rtol=0.03)


def test_categorical_sample_frequencies():
    policy = MLPPolicy(act_dim=3, n_layers=0, discrete=True)
    params = init_params(policy, jax.random.PRNGKey(0), 2)
    params = jax.tree.map(jnp.zeros_like, params)
    params["params"]["out"]["bias"] = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    obs = np.zeros((30000, 2), np.float32)
    draws = host_actor(policy, params, np.random.default_rng(1))(obs)
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / len(draws), [0.2, 0.3, 0.5], atol=0.015)
