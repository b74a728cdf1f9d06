"""--ensemble: E members merged into one MLP act with the mean of the members' own forward passes;
the optimizer's options (AdamW on the kernels only, the cosine schedule) against hand-computed updates."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.core.mlp import member_mean, merge_members
from bcjax.core.model import MLPPolicy, apply, ensemble_policy, host_actor, init_params
from bcjax.core.update import create_train_states, optimizer


def _members(policy: MLPPolicy, k: int, e: int, obs_dim: int) -> dict:
    """K * E stacked params, each member its own init; per seed one set of obs statistics (one buffer)."""
    params = jax.vmap(lambda key: init_params(policy, key, obs_dim))(jax.random.split(jax.random.PRNGKey(0), k * e))
    params = jax.tree.map(np.asarray, params)
    rng = np.random.default_rng(1)
    p = params["params"]
    if not policy.discrete:
        p["log_std"] = rng.normal(size=p["log_std"].shape).astype(np.float32)
    if policy.normalize_obs:
        p["obs_mean"] = np.repeat(rng.normal(size=(k, obs_dim)), e, 0).astype(np.float32)
        p["obs_std"] = np.repeat(rng.uniform(0.5, 2, size=(k, obs_dim)), e, 0).astype(np.float32)
    return params


@pytest.mark.parametrize("n_layers,normalize,discrete", [(2, False, False), (3, True, False), (1, True, True),
                                                         (0, False, False)])
def test_ensemble_acts_with_the_mean_of_its_members_forward_passes(n_layers, normalize, discrete):
    k, e, obs_dim = 3, 4, 5
    policy = MLPPolicy(act_dim=2, n_layers=n_layers, size=8, normalize_obs=normalize, discrete=discrete)
    params = _members(policy, k, e, obs_dim)
    merged = merge_members(params, e)
    obs = np.random.default_rng(2).normal(size=(16, obs_dim)).astype(np.float32) * 2
    acting = ensemble_policy(policy, e)
    for s in range(k):
        # the truth: each member's own JAX forward pass, averaged
        members = [np.asarray(apply(policy, jax.tree.map(lambda x, i=s * e + j: x[i], params), obs)) for j in range(e)]
        seed = jax.tree.map(lambda x, s=s: x[s], merged)
        np.testing.assert_allclose(np.asarray(apply(acting, seed, obs)), np.mean(members, 0), rtol=1e-5, atol=1e-5)
        if discrete:  # the mode: the largest of the members' mean logits
            np.testing.assert_array_equal(host_actor(acting, seed, None)(obs), np.argmax(np.mean(members, 0), -1))
        else:
            np.testing.assert_allclose(host_actor(acting, seed, None)(obs), np.mean(members, 0), rtol=1e-5, atol=1e-5)
            want_std = np.exp(params["params"]["log_std"][s * e:(s + 1) * e].mean(0))  # geometric-mean sigma
            np.testing.assert_allclose(np.exp(seed["params"]["log_std"]), want_std, rtol=1e-6)


def test_one_member_is_the_policy_itself():
    policy = MLPPolicy(act_dim=2)
    params = _members(policy, 2, 1, 3)
    assert merge_members(params, 1) is params and ensemble_policy(policy, 1) is policy
    tree = {"loss": np.arange(6.0).reshape(2, 3)}
    assert member_mean(tree, 1) is tree


def test_member_mean():
    got = member_mean({"loss": np.arange(12.0).reshape(4, 3)}, 2)["loss"]  # rows (0, 1) and (2, 3) are one seed's members
    np.testing.assert_array_equal(got, [[1.5, 2.5, 3.5], [7.5, 8.5, 9.5]])


def _kernel_after(tx, steps: int) -> tuple[np.ndarray, dict]:
    """Seed 0's params after `steps` updates with zero gradients: only weight decay moves them."""
    policy = MLPPolicy(act_dim=2, n_layers=1, size=4, normalize_obs=True)
    state = jax.tree.map(lambda x: x[0], create_train_states(policy, jax.random.PRNGKey(0)[None], 3, *tx))
    start = jax.tree.map(np.asarray, state.params)
    zero = jax.tree.map(jnp.zeros_like, state.params)
    for _ in range(steps):
        state = state.apply_gradients(grads=zero)
    return start, jax.tree.map(np.asarray, state.params)


def test_adamw_decays_the_kernels_only_and_cosine_schedules_its_step():
    lr, wd, n = 0.1, 0.5, 4
    start, got = _kernel_after((lr, wd, None), n)
    for layer in ("hidden_0", "out"):  # decoupled decay: p <- p - lr * wd * p per update
        np.testing.assert_allclose(got["params"][layer]["kernel"], start["params"][layer]["kernel"] * (1 - lr * wd) ** n,
                                   rtol=1e-5)
        np.testing.assert_array_equal(got["params"][layer]["bias"], start["params"][layer]["bias"])
    for name in ("log_std", "obs_mean", "obs_std"):
        np.testing.assert_array_equal(got["params"][name], start["params"][name])
    start, got = _kernel_after((lr, wd, 8), n)  # cosine: lr_t = lr * (1 + cos(pi t / 8)) / 2
    shrink = math.prod(1 - lr * (1 + math.cos(math.pi * t / 8)) / 2 * wd for t in range(n))
    np.testing.assert_allclose(got["params"]["out"]["kernel"], start["params"]["out"]["kernel"] * shrink, rtol=1e-5)


def test_default_optimizer_is_adam_bit_for_bit():
    import optax

    params = {"w": jnp.array([1.0, -2.0]), "kernel": jnp.array([0.5])}
    grads = {"w": jnp.array([0.3, 0.1]), "kernel": jnp.array([-1.0])}
    ours, adam = optimizer(5e-3), optax.adam(5e-3)
    got, _ = ours.update(grads, ours.init(params), params)
    want, _ = adam.update(grads, adam.init(params), params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
