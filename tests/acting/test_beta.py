"""DAgger's beta-mixing: the expert drives a collection step with probability beta_i."""

from __future__ import annotations

import numpy as np
import pytest

from bcjax.acting.rollout import SeedPolicies, beta_at
from bcjax.core.mlp import MLPSpec
from bcjax.data.expert import ExpertPolicy, expert_params_from_dict
from bcjax.errors import BcjaxError
from bcjax.run.config import parse_config
from tests.conftest import make_expert_dict
from tests.tiny_runs import expert_data, hopper_cfg, stored, train


def _expert(nonlin: str = "tanh") -> ExpertPolicy:
    return ExpertPolicy(*expert_params_from_dict(make_expert_dict(11, 3, hidden=(16, 16), nonlin=nonlin), "test"))


@pytest.mark.parametrize("nonlin", ["tanh", "lrelu"])
def test_numpy_expert_matches_jitted(nonlin):
    expert = _expert(nonlin)
    obs = np.random.default_rng(0).normal(size=(7, 11)).astype(np.float32)
    np.testing.assert_allclose(expert.mean_action_np(obs), expert(obs), rtol=1e-5, atol=1e-5)
    # Padded and truncated inputs, as the jitted path handles them.
    np.testing.assert_allclose(expert.mean_action_np(obs[:, :9]), expert(obs[:, :9]), rtol=1e-5, atol=1e-5)


def test_schedules():
    assert [beta_at("linear", i, iters=4) for i in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert beta_at("exponential", 3, beta0=0.8, decay=0.5) == pytest.approx(0.1)
    assert beta_at("none", 0) == 0.0


def _mixed(expert: ExpertPolicy, beta: float, draws: int, n: int, ep_len: int) -> SeedPolicies:
    """One seed on n rows whose policy always gives 0.3, mixed with `expert`; its episodes start on every row."""
    params = {"params": {"out": {"kernel": np.zeros((11, 3), np.float32), "bias": np.full(3, 0.3, np.float32)},
                         "log_std": np.zeros(3, np.float32)}}
    mixed = SeedPolicies(MLPSpec((), 3), [params], [None], [(expert.mean_action_np, beta, np.random.default_rng(draws))],
                         [n], ep_len)
    mixed.begin(np.arange(n))
    return mixed


def test_beta_one_is_the_experts_action():
    expert = _expert()
    mixed = _mixed(expert, 1.0, 0, 40, 1)
    obs = np.random.default_rng(2).normal(size=(40, 11)).astype(np.float32)
    acs, took = mixed(obs, np.ones(1, bool))
    np.testing.assert_array_equal(acs, expert.mean_action_np(obs))
    assert took.sum() == 40


def test_expert_fraction_matches_beta():
    expert = _expert()
    mixed = _mixed(expert, 0.3, 1, 4, 1000)
    obs = np.random.default_rng(2).normal(size=(1000, 4, 11)).astype(np.float32)
    steps = [mixed(o, np.ones(1, bool)) for o in obs]
    acs, took = np.concatenate([a.copy() for a, _ in steps]), np.concatenate([t for _, t in steps])
    from_expert = ~np.all(acs == 0.3, axis=1)
    np.testing.assert_array_equal(took, from_expert)
    # Binomial(4000, 0.3): std ~ 0.0072; 5 sigma.
    assert abs(took.sum() / 4000 - 0.3) < 0.037
    np.testing.assert_allclose(acs[from_expert], expert.mean_action_np(obs.reshape(4000, 11)[from_expert]), atol=1e-5)


def test_beta_zero_is_todays_dagger_and_logs_fraction(tmp_path):
    expert = _expert()
    paths = expert_data("Hopper-v4", expert.mean_action_np, ep_len=30)
    plain = train(hopper_cfg(tmp_path), expert, paths)
    zero = train(hopper_cfg(tmp_path, beta_schedule="exponential", beta0=0.0, beta_decay=1.0), expert, paths)
    half = train(hopper_cfg(tmp_path, beta_schedule="exponential", beta0=0.5, beta_decay=1.0), expert, paths)
    for a, b in zip(plain.rows, zero.rows):
        assert {k: v for k, v in b.items() if k not in ("Train_Beta", "Train_ExpertStepFraction", "TimeSinceStart")} \
            == {k: v for k, v in a.items() if k != "TimeSinceStart"}
    assert "Train_Beta" not in plain.rows[1]
    assert zero.rows[1]["Train_ExpertStepFraction"] == [0.0]
    assert half.rows[1]["Train_Beta"] == [0.5]
    assert 0.2 < half.rows[1]["Train_ExpertStepFraction"][0] < 0.8  # ~60 draws
    # The labels are the expert's whoever acted.
    rows = stored(half, 0)
    np.testing.assert_allclose(rows["action"], expert(rows["observation"]), atol=1e-6)


@pytest.mark.parametrize("argv, msg", [
    (["--beta_schedule", "linear", "--beta_iters", "3"], "use --algo dagger"),
    (["--algo", "dagger", "--beta_schedule", "linear"], "needs --beta_iters"),
    (["--algo", "dagger", "--beta_schedule", "exponential"], "needs --beta_decay"),
    (["--algo", "dagger", "--beta_schedule", "linear", "--beta_iters", "3", "--beta0", "0.5"], "--beta0 belongs"),
    (["--algo", "dagger", "--beta_iters", "3"], "--beta_iters belongs"),
    (["--algo", "dagger", "--beta_schedule", "exponential", "--beta_decay", "1.5"], "--beta_decay must be"),
    (["--algo", "dagger", "--beta_schedule", "exponential", "--beta_decay", "0.5", "--beta0", "nan"], "--beta0 must"),
    (["--algo", "dagger", "--beta_schedule", "linear", "--beta_iters", "0"], "--beta_iters must"),
])
def test_bad_beta_flags(argv, msg):
    with pytest.raises(BcjaxError, match=msg):
        parse_config(argv)


def test_good_beta_flags():
    cfg = parse_config(["--algo", "dagger", "--beta_schedule", "exponential", "--beta_decay", "0.5"])
    assert (cfg.beta_schedule, cfg.beta0, cfg.beta_decay) == ("exponential", None, 0.5)


@pytest.mark.slow
def test_beta_mixed_collection_in_workers_equals_in_process(tmp_path):
    """The expert travels to the rollout workers (numpy, picklable): same trajectories as in this process."""
    expert = _expert()
    paths = expert_data("Hopper-v4", expert.mean_action_np, ep_len=30)
    cfg = hopper_cfg(tmp_path, n_iter=3, num_seeds=2, beta_schedule="linear", beta_iters=3)
    here = train(cfg.replace(rollout_workers=0), expert, paths)
    pooled = train(cfg.replace(rollout_workers=2), expert, paths)
    drop = ("TimeSinceStart",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in here.rows] == \
        [{k: v for k, v in r.items() if k not in drop} for r in pooled.rows]
    assert 0 < pooled.rows[1]["Train_ExpertStepFraction"][0] < 1
