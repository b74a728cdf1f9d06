"""The MLP: its params and init are flax nn.Dense's (older checkpoints load), the one JAX apply equals a
hand-computed numpy forward pass and the numpy apply (what rollouts run); samples have the right statistics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.core.mlp import ACTIVATIONS
from bcjax.core.model import MLPPolicy, activation, apply, host_actor, init_params
from bcjax.run.config import ACTIVATION_NAMES


def test_one_activation_table_names_the_flags_choices_and_jax_nn():
    assert tuple(sorted(ACTIVATIONS)) == ACTIVATION_NAMES
    assert all(activation(name) is getattr(jax.nn, name) for name in ACTIVATIONS)
    with pytest.raises(ValueError, match="unknown activation 'lrelu'"):
        activation("lrelu")


class _FlaxDenseMLP(nn.Module):
    """The student as flax layers (what older runs were trained and checkpointed with), flax's init scheme."""

    act_dim: int
    n_layers: int
    size: int

    @nn.compact
    def __call__(self, obs):
        x = obs
        for i in range(self.n_layers):
            x = jnp.tanh(nn.Dense(self.size, name=f"hidden_{i}")(x))
        self.param("log_std", nn.initializers.zeros, (self.act_dim,))
        return nn.Dense(self.act_dim, name="out")(x)


@pytest.mark.parametrize("n_layers", [0, 2])
def test_params_and_outputs_are_flax_dense_bit_for_bit(n_layers):
    policy = MLPPolicy(act_dim=3, n_layers=n_layers, size=16, init_scheme="flax")
    ref = _FlaxDenseMLP(3, n_layers, 16)
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(64, 5)), jnp.float32)
    params, want = init_params(policy, jax.random.PRNGKey(7), 5), ref.init(jax.random.PRNGKey(7), obs)
    assert jax.tree.structure(params) == jax.tree.structure(want)
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, want)))
    np.testing.assert_array_equal(jax.jit(lambda p, o: apply(policy, p, o))(params, obs),
                                  jax.jit(ref.apply)(want, obs))


def test_param_tree_names():
    p = init_params(MLPPolicy(act_dim=2, n_layers=2, size=4, normalize_obs=True), jax.random.PRNGKey(0), 3)["params"]
    assert sorted(p) == ["hidden_0", "hidden_1", "log_std", "obs_mean", "obs_std", "out"]
    assert p["hidden_0"]["kernel"].shape == (3, 4) and p["out"]["bias"].shape == (2,)
    assert "log_std" not in init_params(MLPPolicy(act_dim=2, discrete=True), jax.random.PRNGKey(0), 3)["params"]


def test_torch_init_is_uniform_in_inverse_sqrt_fan_in():
    p = init_params(MLPPolicy(act_dim=3, n_layers=1, size=4096), jax.random.PRNGKey(0), 100)["params"]
    for x in (p["hidden_0"]["kernel"], p["hidden_0"]["bias"]):
        assert float(jnp.abs(x).max()) <= 0.1 and float(jnp.abs(x).max()) > 0.099
    assert float(jnp.abs(p["out"]["kernel"]).max()) <= 1 / 64


def test_apply_matches_a_hand_computed_network():
    """Weights written out: h = relu(norm(x) W1 + b1), out = h W2 + b2."""
    policy = MLPPolicy(act_dim=1, n_layers=1, size=2, activation="relu", normalize_obs=True)
    p = {"hidden_0": {"kernel": np.array([[1.0, -1.0], [2.0, 0.5]], np.float32), "bias": np.array([0.0, 1.0], np.float32)},
         "out": {"kernel": np.array([[3.0], [-2.0]], np.float32), "bias": np.array([0.5], np.float32)},
         "log_std": np.zeros(1, np.float32), "obs_mean": np.array([1.0, 0.0], np.float32),
         "obs_std": np.array([2.0, 1.0], np.float32)}
    obs = np.array([[3.0, 1.0], [1.0, -1.0]], np.float32)
    # row 0: norm (1, 1) -> pre (3, 0.5) -> h (3, 0.5) -> 9 - 1 + 0.5; row 1: norm (0, -1) -> pre (-2, 0.5) -> h (0, 0.5) -> -1 + 0.5
    want = np.array([[8.5], [-0.5]], np.float32)
    np.testing.assert_array_equal(np.asarray(apply(policy, {"params": p}, obs)), want)
    np.testing.assert_array_equal(host_actor(policy, {"params": p}, None)(obs), want)


@pytest.mark.parametrize("activation_name", sorted(ACTIVATIONS))
def test_numpy_apply_matches_jax_apply(activation_name):
    policy = MLPPolicy(act_dim=3, n_layers=2, size=16, activation=activation_name)
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
