"""DART collection (--action_noise): noisy actions drive the env, the data records the expert's own actions."""

import numpy as np
import pytest

from bcjax.data.bundled import bundled_expert_path
from bcjax.data.expert import load_expert
from bcjax.data.expert_data import load_expert_data
from bcjax.errors import BcjaxError
from bcjax.experts.collection import CollectArgs, main


def _collect(tmp_path, name: str, *extra: str) -> list[dict]:
    out = tmp_path / name
    assert main(["--env_name", "Hopper-v4", "--n_traj", "2", "--ep_len", "40", "--output", str(out), *extra]) == 0
    return load_expert_data(out)


def test_noisy_collection_visits_other_states_and_keeps_the_experts_labels(tmp_path, capsys):
    expert = load_expert(bundled_expert_path("Hopper-v4")).for_task("Hopper-v4")
    clean, noisy = _collect(tmp_path, "clean.pkl"), _collect(tmp_path, "dart.pkl", "--action_noise", "0.5")
    assert "(action noise 0.5)" in capsys.readouterr().out
    for c, n in zip(clean, noisy):
        np.testing.assert_array_equal(c["observation"][0], n["observation"][0])  # the same reset
        assert np.abs(c["observation"][1:] - n["observation"][1:len(c["observation"])]).max() > 1e-2  # not the same path
        for p in (c, n):  # the labels: the expert's noise-free action at each visited state
            np.testing.assert_allclose(p["action"], expert.mean_action_np(p["observation"]), rtol=1e-4, atol=1e-5)
    assert _collect(tmp_path, "zero.pkl", "--action_noise", "0")[0]["observation"].tobytes() == clean[0]["observation"].tobytes()


@pytest.mark.parametrize("sigma", [-0.1, float("nan")])
def test_bad_action_noise_is_refused(sigma):
    with pytest.raises(BcjaxError, match="--action_noise must be 0 or more"):
        CollectArgs(action_noise=sigma)
