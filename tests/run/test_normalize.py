"""--normalize_obs: the policy's input standardised with the buffer's observation mean and std."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from tiny_runs import expert_data, hopper_cfg, hopper_expert, run_logged, stored

from bcjax.acting.envs import make_env
from bcjax.acting.rollout import sample_n_trajectories
from bcjax.core import buffer as rb
from bcjax.core.model import OBS_STD_FLOOR, MLPPolicy, apply, host_actor
from bcjax.core.update import create_train_states, with_obs_stats
from bcjax.run.evaluate import evaluate_run


def _run(tmp_path):
    paths = expert_data("Hopper-v4", hopper_expert, ep_len=30)
    return run_logged(hopper_cfg(tmp_path, normalize_obs=True, num_seeds=2), hopper_expert, paths)


def test_normalised_run_stats_evaluate_and_actor(tmp_path):
    run_dir, result = _run(tmp_path)
    p = result.states.params["params"]
    for k in range(2):
        rows = stored(result, k)["observation"].astype(np.float64)
        np.testing.assert_allclose(p["obs_mean"][k], rows.mean(axis=0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(p["obs_std"][k], np.maximum(rows.std(axis=0), OBS_STD_FLOOR), rtol=1e-6)
    # The jitted apply and the numpy actor compute the same normalised network.
    params0 = jax.tree.map(lambda x: x[0], result.states.params)
    obs = np.random.default_rng(0).normal(size=(5, 11)).astype(np.float32)
    np.testing.assert_allclose(host_actor(result.policy, params0, None)(obs),
                               apply(result.policy, params0, jnp.asarray(obs)), rtol=1e-5, atol=1e-5)
    # scripts/evaluate.py reloads the stats with the policy.
    r = evaluate_run(run_dir, episodes=2, seed=3, sample=False)
    for k in range(2):
        env = make_env("Hopper-v4")
        env.reset(seed=3)
        params = jax.tree.map(lambda x, k=k: x[k], result.states.params)
        paths = sample_n_trajectories(env, host_actor(result.policy, params, None), 2, 30)
        assert r.returns[k].tolist() == [float(p["reward"].sum()) for p in paths]


def test_adam_leaves_the_stats_unchanged(tmp_path):
    from bcjax.core.update import fit

    policy = MLPPolicy(act_dim=3, normalize_obs=True)
    states = create_train_states(policy, jnp.stack([jax.random.PRNGKey(0)]), 11, 1e-2)
    obs = np.random.default_rng(1).normal(3.0, 2.0, size=(1, 50, 11)).astype(np.float32)
    states = with_obs_stats(states, [obs[0]])
    mean, std = np.asarray(states.params["params"]["obs_mean"]), np.asarray(states.params["params"]["obs_std"])
    kernel = np.asarray(states.params["params"]["out"]["kernel"])
    buffer = rb.Buffer({"observation": jnp.asarray(obs), "action": jnp.zeros((1, 50, 3))}, jnp.asarray([50], jnp.int32),
                       jnp.zeros(1, jnp.int32))
    states, _ = fit(policy, 10, 5, states, buffer, jnp.stack([jax.random.PRNGKey(1)]))
    assert np.array_equal(states.params["params"]["obs_mean"], mean)
    assert np.array_equal(states.params["params"]["obs_std"], std)
    assert not np.array_equal(states.params["params"]["out"]["kernel"], kernel)  # the rest did train
