"""The CS285 expert loader (both applies) against a plain numpy forward pass, the restricted unpickler, real experts."""

import pickle
import re

import numpy as np
import pytest
from conftest import cs285_file, make_expert_dict, write_pickle

from bcjax.core.adapters import obs_map
from bcjax.data.expert import load_expert
from bcjax.data.expert_data import collect_expert_paths, load_expert_data
from bcjax.data.safe_pickle import load_pickle
from bcjax.errors import BcjaxError


def numpy_forward(d: dict, obs: np.ndarray) -> np.ndarray:
    """The homework's forward pass, written independently in float64."""
    pol = d["GaussianPolicy"]
    std = pol["obsnorm"]["Standardizer"]
    mean, meansq = std["mean_1_D"], std["meansq_1_D"]
    in_dim = mean.shape[1]
    x = np.zeros((len(obs), in_dim))
    n = min(in_dim, obs.shape[1])
    x[:, :n] = obs[:, :n]
    h = (x - mean) / (np.sqrt(np.maximum(0, meansq - mean**2)) + 1e-6)
    act = np.tanh if d["nonlin_type"] == "tanh" else (lambda z: np.where(z > 0, z, 0.01 * z))
    net = pol["hidden"]["FeedforwardNet"]
    for name in sorted(net, key=lambda s: int(s.split("_")[1])):
        h = act(h @ net[name]["AffineLayer"]["W"] + net[name]["AffineLayer"]["b"])
    return h @ pol["out"]["AffineLayer"]["W"] + pol["out"]["AffineLayer"]["b"]


@pytest.mark.parametrize("nonlin", ["tanh", "lrelu"])
def test_synthetic_expert_matches_numpy(tmp_path, nonlin):
    d = make_expert_dict(7, 2, hidden=(16, 16, 16), nonlin=nonlin)
    expert = load_expert(write_pickle(tmp_path / "e.pkl", d))
    obs = np.random.default_rng(1).normal(size=(50, 7))
    np.testing.assert_allclose(expert(obs), numpy_forward(d, obs), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(expert(obs[:1]), numpy_forward(d, obs[:1]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(expert.mean_action_np(obs), numpy_forward(d, obs), rtol=1e-4, atol=1e-4)


def test_padding_and_truncation(tmp_path):
    d = make_expert_dict(10, 3)
    expert = load_expert(write_pickle(tmp_path / "e.pkl", d))
    for dim in (4, 15):  # shorter observations are zero-padded, longer ones truncated
        obs = np.random.default_rng(dim).normal(size=(5, dim))
        np.testing.assert_allclose(expert(obs), numpy_forward(d, obs), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(expert.mean_action_np(obs), numpy_forward(d, obs), rtol=1e-4, atol=1e-4)


def test_v5_map_runs_in_both_applies(tmp_path):
    """A Humanoid-v4 expert on Humanoid-v5's observations: the map to the v4 layout, then the network."""
    d = make_expert_dict(376, 17, hidden=(8,))
    expert = load_expert(write_pickle(tmp_path / "e.pkl", d)).for_task("Humanoid-v5")
    obs = np.random.default_rng(0).normal(size=(6, 348))
    want = numpy_forward(d, obs_map("Humanoid-v5")(obs))
    np.testing.assert_allclose(expert(obs), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(expert.mean_action_np(obs), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["Hopper", "HalfCheetah", "Ant"])
def test_real_expert_matches_numpy(name):
    path = cs285_file("experts", f"{name}.pkl")
    with path.open("rb") as f:
        d = pickle.load(f)
    expert = load_expert(path)
    obs = np.random.default_rng(0).normal(size=(4100, 27 if name == "Ant" else expert.obs_dim))
    np.testing.assert_allclose(expert(obs), numpy_forward(d, obs), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(expert.mean_action_np(obs), numpy_forward(d, obs), rtol=1e-3, atol=1e-3)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_restricted_unpickler_refuses_globals(tmp_path, capsys):
    path = write_pickle(tmp_path / "evil.pkl", {"nonlin_type": "tanh", "x": _Evil()})
    with pytest.raises(BcjaxError, match="builtins.print"):
        load_pickle(path, "expert policy", "--expert_policy_file")
    assert "never run" not in capsys.readouterr().out


def test_bad_files(tmp_path):
    with pytest.raises(BcjaxError, match="not found"):
        load_expert(tmp_path / "missing.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"this is not a pickle")
    with pytest.raises(BcjaxError, match="not a readable pickle"):
        load_expert(tmp_path / "junk.pkl")
    with pytest.raises(BcjaxError, match="missing 'GaussianPolicy'"):
        load_expert(write_pickle(tmp_path / "wrong.pkl", {"nonlin_type": "tanh"}))
    with pytest.raises(BcjaxError, match="expected a non-empty list"):
        load_expert_data(write_pickle(tmp_path / "wrong_data.pkl", {"observation": np.zeros(3)}))


@pytest.mark.slow
@pytest.mark.parametrize("name,task", [("Hopper", "Hopper-v4"), ("HalfCheetah", "HalfCheetah-v4"), ("Ant", "Ant-v4")])
def test_real_expert_reaches_its_data_return(name, task):
    expert = load_expert(cs285_file("experts", f"{name}.pkl"))
    data = load_expert_data(cs285_file("expert_data", f"expert_data_{task}.pkl"))
    data_return = np.mean([p["reward"].sum() for p in data])
    paths = collect_expert_paths(expert, task, 2, 0, 1000)  # the numpy apply
    mean_return = np.mean([p["reward"].sum() for p in paths])
    assert mean_return >= 0.9 * data_return, (mean_return, data_return)


def test_a_fitting_expert_that_stumbles_once_passes_the_check(capsys):
    # The CS285 Ant expert's first episode from seed 5 returns ~900 (it stumbles) against its data's 4682; a misfit
    # would be weak on every episode, this expert is not: the best of 3 passes.
    from bcjax.run.config import Config
    from bcjax.run.driver import check_expert_return

    expert = load_expert(cs285_file("experts", "Ant.pkl")).for_task("Ant-v4")
    data = load_expert_data(cs285_file("expert_data", "expert_data_Ant-v4.pkl"))
    check_expert_return(expert, Config(env_name="Ant-v4", seed=5), data)
    out = capsys.readouterr().out
    assert re.search(r"one episode returns \d+\.\d in 1000 steps, the best of 3 \d{4}\.\d", out), out
