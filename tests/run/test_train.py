"""The BC / DAgger loop end to end on real environments."""

import jax
import numpy as np

from bcjax.acting.envs import make_env
from bcjax.acting.rollout import sample_n_trajectories
from bcjax.core.loss import nll_loss
from bcjax.core.model import host_actor, init_params
from bcjax.data.expert import load_expert
from bcjax.data.expert_data import load_expert_data
from bcjax.run.config import Config
from tests.tiny_runs import expert_data, hopper_cfg, hopper_expert, metrics_without_time, run_logged, stored, train

TINY = dict(num_agent_train_steps_per_iter=300, eval_batch_size=200, video_log_freq=-1, rollout_workers=0)


def test_bc_on_hopper_data_lowers_the_loss(any_hopper_files):
    expert_file, data_file = any_hopper_files
    paths = load_expert_data(data_file)
    cfg = Config(algo="bc", env_name="Hopper-v4", **TINY)
    result = train(cfg, load_expert(expert_file), paths)
    obs = np.concatenate([p["observation"] for p in paths]).astype(np.float32)
    acs = np.concatenate([p["action"] for p in paths]).astype(np.float32)
    trained = jax.tree.map(lambda x: x[0], result.states.params)
    fresh = init_params(result.policy, jax.random.PRNGKey(123), obs.shape[1])
    trained_loss = float(nll_loss(result.policy, trained, obs, acs))
    assert trained_loss < float(nll_loss(result.policy, fresh, obs, acs)) - 2.0
    losses = result.losses[0][0]
    assert losses[-20:].mean() < losses[:20].mean() - 2.0
    assert np.isclose(result.rows[0]["Training Loss"][0], losses[-1])
    data_return = np.mean([p["reward"].sum() for p in paths])
    assert data_return > 3000  # an expert's data (CS285's: ~3700; the bundled one's: ~3500)
    assert np.isclose(result.rows[0]["Initial_DataCollection_AverageReturn"][0], data_return, rtol=1e-4)
    # far above a fresh policy, which falls at once (its return on 5 episodes of the same env, sampled alike)
    env = make_env("Hopper-v4", seed=cfg.seed)
    fresh_paths = sample_n_trajectories(env, host_actor(result.policy, fresh, np.random.default_rng(0)), 5, 1000)
    fresh_return = np.mean([p["reward"].sum() for p in fresh_paths])
    assert result.rows[0]["Eval_AverageReturn"][0] > 2 * fresh_return + 50


def test_dagger_grows_buffer_with_expert_labels(any_hopper_files):
    expert_file, data_file = any_hopper_files
    expert = load_expert(expert_file)
    paths = load_expert_data(data_file)
    cfg = Config(algo="dagger", n_iter=3, batch_size=300, env_name="Hopper-v4", **TINY)
    result = train(cfg, expert, paths)
    rows = stored(result, 0)  # no wrap: in order
    collected = int(result.rows[-1]["Train_EnvstepsSoFar"][0])
    assert collected >= 2 * 300
    assert len(rows["observation"]) == 2000 + collected
    np.testing.assert_allclose(rows["observation"][:2000], np.concatenate([p["observation"] for p in paths]), rtol=1e-6)
    new_obs = rows["observation"][2000:]
    np.testing.assert_allclose(rows["action"][2000:], expert(new_obs), rtol=1e-5, atol=1e-5)
    # the relabelled observations are real Hopper states the policy visited, not expert-data rows
    assert not np.isin(new_obs[:, 0], rows["observation"][:2000, 0]).all()


def test_same_seed_same_metrics(hopper_files):
    expert_file, data_file = hopper_files
    expert, paths = load_expert(expert_file), load_expert_data(data_file)
    cfg = Config(algo="dagger", n_iter=2, batch_size=200, env_name="Hopper-v4", **TINY)
    a, b = train(cfg, expert, paths), train(cfg, expert, paths)
    c = train(cfg.replace(seed=2), expert, paths)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "TimeSinceStart"} for r in rows]  # noqa: E731
    assert drop(a.rows) == drop(b.rows)
    assert drop(a.rows) != drop(c.rows)


def _cartpole_expert(obs: np.ndarray) -> np.ndarray:
    """Push the cart toward the side the pole falls to: balances CartPole-v1 for 500 steps."""
    obs = np.asarray(obs)
    return (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int32)


def test_discrete_cartpole_dagger_end_to_end():
    env = make_env("CartPole-v1", seed=0)
    expert_paths = sample_n_trajectories(env, _cartpole_expert, 2, 500)
    assert all(p["reward"].sum() == 500 for p in expert_paths)
    cfg = Config(algo="dagger", n_iter=3, env_name="CartPole-v1", batch_size=500, num_agent_train_steps_per_iter=500,
                 eval_batch_size=500, video_log_freq=-1, num_seeds=2, rollout_workers=0)
    result = train(cfg, _cartpole_expert, expert_paths)
    assert result.buffer.data["action"].dtype == np.int32
    final = result.rows[-1]["Eval_AverageReturn"]
    assert len(final) == 2 and min(final) >= 195, final  # CartPole's "solved" bar


def test_mujoco_warnings_go_through_python_not_a_log_file(tmp_path, monkeypatch):
    import pytest

    from bcjax.acting import envs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(envs, "_MUJOCO_SEEN", set())  # each kind is reported once per process
    env = make_env("HalfCheetah-v4", seed=0)  # its model warns on load (settotalmass): no log file either
    env.unwrapped.data.qvel[:] = 1e30  # an unstable state: MuJoCo warns
    with pytest.warns(RuntimeWarning, match="MuJoCo: Nan, Inf or huge value"):
        env.step(np.zeros(6, np.float32))
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_envs_side_by_side_change_no_metric(tmp_path):
    """--num_envs and --eval_num_envs step a seed's episodes on several envs side by side: every metric is the
    one-env run's (tests/acting checks the rollouts themselves against one gymnasium env)."""
    paths = expert_data("Hopper-v4", hopper_expert, ep_len=30)
    rows = {}
    for envs in ((1, 1), (None, None), (3, None), (1, 4), (2, 5)):
        cfg = hopper_cfg(tmp_path / str(envs), n_iter=2, num_seeds=2, num_envs=envs[0], eval_num_envs=envs[1],
                         eval_batch_size=90)
        rows[envs] = metrics_without_time(run_logged(cfg, hopper_expert, paths)[0])
    assert len(rows[1, 1]) == 2 and rows[1, 1][1]["Eval_AverageReturn"]
    assert all(r == rows[1, 1] for r in rows.values())
