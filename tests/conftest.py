"""Shared fixtures: the CS285 sample files (skipped when ../shared is absent) and synthetic experts."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "cs285"


@pytest.fixture(autouse=True, scope="session")
def _compile_cache_dir(tmp_path_factory):
    """The suite's own empty compilation cache (inherited by its subprocesses): never the user's, never warm."""
    old = os.environ.get("BCJAX_CACHE_DIR")
    os.environ["BCJAX_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
    yield
    if old is None:
        os.environ.pop("BCJAX_CACHE_DIR", None)
    else:
        os.environ["BCJAX_CACHE_DIR"] = old


def cs285_file(kind: str, name: str) -> Path:
    """A file from ../shared/cs285, or skip the test with the reason."""
    path = SHARED / kind / name
    if not path.is_file():
        pytest.skip(f"CS285 sample file {path} not present (it lives in ../shared beside the repo)")
    return path


def make_expert_dict(obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (64, 64), nonlin: str = "tanh",
                     seed: int = 0) -> dict:
    """A random expert in the CS285 pickle layout (layer names as the homework's files have them)."""
    rng = np.random.default_rng(seed)
    sizes = (obs_dim, *hidden)
    layers = {
        f"layer_{2 * i}": {"AffineLayer": {"W": rng.normal(0, 0.5, (a, b)), "b": rng.normal(0, 0.1, (1, b))}}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
    }
    mean = rng.normal(0, 1, (1, obs_dim))
    return {
        "nonlin_type": nonlin,
        "GaussianPolicy": {
            "obsnorm": {"Standardizer": {"mean_1_D": mean, "meansq_1_D": mean**2 + rng.uniform(0.5, 2, (1, obs_dim)),
                                         "count": np.array(10.0)}},
            "hidden": {"FeedforwardNet": layers},
            "out": {"AffineLayer": {"W": rng.normal(0, 0.5, (sizes[-1], act_dim)), "b": rng.normal(0, 0.1, (1, act_dim))}},
            "logstdevs_1_Da": np.zeros((1, act_dim)),
        },
    }


def write_pickle(path: Path, obj: object) -> Path:
    with path.open("wb") as f:
        pickle.dump(obj, f)
    return path


@pytest.fixture(scope="session")
def bundled_hopper_files(tmp_path_factory):
    """bcjax's own Hopper expert and 2 trajectories of it: what a fresh clone has without ../shared."""
    from bcjax.data.bundled import bundled_expert_path
    from bcjax.data.expert import load_expert
    from bcjax.data.expert_data import collect_expert_paths, save_expert_data

    expert_file = bundled_expert_path("Hopper-v4")
    data_file = tmp_path_factory.mktemp("bundled") / "expert_data_Hopper-v4.pkl"
    save_expert_data(collect_expert_paths(load_expert(expert_file), "Hopper-v4", n_traj=2, seed=1), data_file)
    return expert_file, data_file


@pytest.fixture
def hopper_files():
    """The real CS285 Hopper expert and data."""
    return cs285_file("experts", "Hopper.pkl"), cs285_file("expert_data", "expert_data_Hopper-v4.pkl")


@pytest.fixture(params=["cs285", "bundled"])
def any_hopper_files(request):
    """A Hopper expert and its data: the CS285 files (skipped without ../shared), then bcjax's bundled expert."""
    return request.getfixturevalue("hopper_files" if request.param == "cs285" else "bundled_hopper_files")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One tiny scripts/train.py run per session (tiny_runs.TINY_CLI) for the tests that only read what a run
    writes: its run directory, metrics, checkpoints, cached expert data and printout. Never change it."""
    from tiny_runs import cli_run

    return cli_run(tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture(scope="session")
def cartpole_run(tmp_path_factory):
    """A 2-seed CartPole DAgger run without --save_params (only its final policy is saved): (run_dir, result),
    the in-memory result to check a reloaded run against. Never change it."""
    from tiny_runs import cartpole_cfg, cartpole_expert, expert_data, run_logged

    paths = expert_data("CartPole-v1", cartpole_expert, n=1, ep_len=120)
    cfg = cartpole_cfg(tmp_path_factory.mktemp("cartpole_run"), n_iter=2, num_seeds=2)
    return run_logged(cfg, cartpole_expert, paths)
