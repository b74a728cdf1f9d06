"""SAC: the tanh-Gaussian log-probability, critic learning, the exact CS285 export, and the expert training (scripts/train_expert.py)."""

from __future__ import annotations

import json

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.data.expert import load_expert, save_expert
from bcjax.data.safe_pickle import load_pickle
from bcjax.experts import training as expert_training
from bcjax.experts.sac import (
    SACConfig,
    create_sac_state,
    empty_buffer,
    export_cs285,
    host_act,
    host_actor_params,
    sample_action,
    train_chunk,
)
from bcjax.run.checkpoint import checkpoint_steps, save_checkpoint


def _state(obs_dim=3, low=(-2.0,), high=(2.0,), hidden=(32, 32), seed=0, **kw):
    return create_sac_state(jax.random.PRNGKey(seed), obs_dim, np.array(low), np.array(high),
                            SACConfig(hidden=hidden, **kw))


def test_log_prob_matches_change_of_variables():
    state = _state(obs_dim=4, low=(-1.0, -1.0), high=(1.0, 1.0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
    key = jax.random.PRNGKey(2)
    act, logp = sample_action(state.actor, state.actor.params, obs, key, state.act_scale, state.act_bias)
    # Independent: Gaussian density of u = atanh(a), divided by |da/du| = 1 - a^2, in float64.
    mean, log_std = (np.asarray(x, np.float64) for x in state.actor.apply_fn({"params": state.actor.params}, obs))
    a = np.asarray(act, np.float64)
    u = np.arctanh(a)
    std = np.exp(log_std)
    want = np.sum(-0.5 * ((u - mean) / std) ** 2 - np.log(std * np.sqrt(2 * np.pi)) - np.log(1 - a**2), -1)
    np.testing.assert_allclose(np.asarray(logp), want, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_few_hundred_updates_reduce_critic_loss():
    """Pendulum transitions from random actions: the critic's TD loss falls over 300 fused updates."""
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    rows = {k: [] for k in ("observation", "action", "reward", "next_observation", "done")}
    for _ in range(2000):
        act = env.action_space.sample()
        nxt, r, term, trunc, _ = env.step(act)
        for k, v in zip(rows, (obs, act, r, nxt, float(term))):
            rows[k].append(v)
        obs = env.reset()[0] if term or trunc else nxt
    rows = {k: np.asarray(v, np.float32) for k, v in rows.items()}
    cfg = SACConfig(hidden=(64, 64), batch_size=128)
    state = _state(hidden=(64, 64))
    buffer = empty_buffer(4096, 3, 1)
    rows = {k: v[None] for k, v in rows.items()}  # one seed's ring
    losses = []
    for i in range(6):  # the first call also inserts all rows; later ones insert nothing new
        count = np.array([2000 if i == 0 else 0], np.int32)
        state, buffer, m, _ = train_chunk(state, buffer, rows, count, n_updates=50, cfg=cfg)
        losses.append(float(m["critic_loss"]))
    assert int(state.step) == 300 and int(buffer.size[0]) == 2000
    np.testing.assert_array_equal(np.asarray(buffer.data["reward"][0, :2000]), rows["reward"][0])
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses


def test_export_reproduces_mean_action_exactly(tmp_path):
    state = _state(obs_dim=5, low=(-2.0, 0.0), high=(2.0, 1.0), hidden=(16, 8), seed=3)
    obs = np.random.default_rng(0).normal(0, 2, (64, 5)).astype(np.float32)
    path = tmp_path / "expert.pkl"
    save_expert(export_cs285(state, obs), path)

    raw = load_pickle(path, "expert policy", "--expert_policy_file")
    assert raw["nonlin_type"] == "tanh"
    assert sorted(raw["GaussianPolicy"]["hidden"]["FeedforwardNet"]) == ["layer_0", "layer_2", "layer_4"]
    expert = load_expert(path)
    mean, _ = state.actor.apply_fn({"params": state.actor.params}, jnp.asarray(obs))  # the JAX actor itself
    want = np.asarray(jnp.tanh(mean) * state.act_scale + state.act_bias)
    np.testing.assert_allclose(expert(obs), want, atol=2e-6)
    # The numpy actor used while training acts with the same mean action.
    np.testing.assert_allclose(host_act(host_actor_params(state), obs, None), want, atol=2e-6)
    # Scaled bounds: the second action lies in [0, 1].
    assert np.all(want[:, 1] >= 0) and np.all(want[:, 1] <= 1)


@pytest.mark.slow
def test_train_expert_runs_checkpoints_and_resumes(tmp_path, capsys):
    mod = expert_training
    logdir = tmp_path / "run"
    args = ["--env_name", "Pendulum-v1", "--hidden", "16", "16", "--batch_size", "64", "--start_steps", "200",
            "--chunk", "50", "--eval_every", "200", "--eval_episodes", "1", "--ckpt_every", "200",
            "--buffer_size", "5000", "--logdir", str(logdir), "--no_gpu"]
    assert mod.main(args + ["--total_steps", "400"]) == 0
    assert checkpoint_steps(logdir / "checkpoints") == [200, 400]
    assert mod.main(args + ["--total_steps", "400"]) == 2  # refuses to overwrite a run
    assert "--resume" in capsys.readouterr().err
    assert mod.main(args + ["--total_steps", "600", "--resume"]) == 0
    assert "resumed" in capsys.readouterr().out
    rows = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["Train_EnvstepsSoFar"] for r in rows] == [200, 400, 600]
    assert "critic_loss" in rows[-1]
    assert checkpoint_steps(logdir / "checkpoints")[-1] == 600
    assert load_expert(logdir / "expert.pkl").act_dim == 1
    # A checkpoint whose tree is not this run's (the replay ring as a plain dict, as bcjax saved it before):
    # one line, no orbax traceback.
    old = tmp_path / "old"
    state = _state(obs_dim=3, hidden=(16, 16))
    save_checkpoint(old / "checkpoints", 200, {"sac": state, "buffer": {"reward": np.zeros(5000, np.float32)}},
                    {"has_buffer": True})
    old_args = [a if a != str(logdir) else str(old) for a in args]
    assert mod.main(old_args + ["--total_steps", "800", "--resume"]) == 2
    assert capsys.readouterr().err.startswith("error: cannot resume from")


def test_train_expert_bad_input_is_one_line(tmp_path, capsys):
    mod = expert_training
    assert mod.main(["--env_name", "Pendulum-v1", "--logdir", str(tmp_path / "x"), "--resume", "--no_gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --resume: no checkpoint") and "\n" not in err
    assert mod.main(["--env_name", "CartPole-v1", "--logdir", str(tmp_path / "y"), "--no_gpu"]) == 2
    assert "needs Box" in capsys.readouterr().err
    assert mod.main(["--env_name", "Pendulum-v1", "--seed", "-1", "--no_gpu"]) == 2
    assert "--seed must be between 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        mod.main(["--chunk"])
