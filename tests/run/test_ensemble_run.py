"""A run with --ensemble: seeds x members trained, each seed acting, logged and reloaded as one policy whose
action is the mean of its members' own forward passes."""

import jax
import numpy as np
from tiny_runs import expert_data, hopper_cfg, hopper_expert, run_logged

from bcjax.acting.envs import make_env
from bcjax.acting.rollout import sample_n_trajectories
from bcjax.core.model import MLPPolicy, apply
from bcjax.run.checkpoint import load_policy
from bcjax.run.evaluate import evaluate_run


def test_an_ensemble_run_acts_and_reloads_as_its_members_mean(tmp_path):
    seeds, members = 2, 3
    cfg = hopper_cfg(tmp_path, num_seeds=seeds, ensemble=members, normalize_obs=True, deterministic_eval=True)
    run_dir, result = run_logged(cfg, hopper_expert, expert_data("Hopper-v4", hopper_expert, ep_len=30))
    assert all(x.shape[0] == seeds * members for x in jax.tree.leaves(result.states.params))
    row = result.rows[-1]
    assert len(row["Eval_AverageReturn"]) == len(row["Training Loss"]) == seeds  # one entry per seed, not per member
    assert result.losses[-1].shape == (seeds, cfg.num_agent_train_steps_per_iter)

    trained = jax.tree.map(np.asarray, result.states.params)
    member = MLPPolicy(act_dim=3, normalize_obs=True)

    def mean_of_members(s: int):  # the truth: each member's own JAX forward pass, averaged
        params = [jax.tree.map(lambda x, i=s * members + e: x[i], trained) for e in range(members)]
        return lambda obs: np.mean([np.asarray(apply(member, p, obs.astype(np.float32))) for p in params], 0)

    saved = load_policy(run_dir)
    obs = np.random.default_rng(0).normal(size=(8, 11)).astype(np.float32)
    r = evaluate_run(run_dir, episodes=2, seed=4, sample=False)
    assert r.returns.shape == (seeds, 2)
    for s in range(seeds):
        np.testing.assert_allclose(saved.policy.apply(saved.params(s), obs), mean_of_members(s)(obs), rtol=1e-5, atol=1e-6)
        env = make_env("Hopper-v4")
        env.reset(seed=4)
        paths = sample_n_trajectories(env, mean_of_members(s), 2, 30)
        np.testing.assert_allclose(r.returns[s], [p["reward"].sum() for p in paths], rtol=1e-5)
