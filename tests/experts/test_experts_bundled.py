"""The experts bcjax ships, expert data collection, and the zero-flag default run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bcjax.acting.envs import env_info, make_env
from bcjax.data.bundled import bundled_expert_path, bundled_records
from bcjax.data.expert import load_expert
from bcjax.data.expert_data import collect_expert_paths, load_expert_data
from bcjax.errors import BcjaxError
from bcjax.run.main import main as train_main

RECORDS = bundled_records()


def test_bundled_records_are_complete():
    assert {"Hopper-v4", "HalfCheetah-v4"} <= set(RECORDS)
    for env_name, rec in RECORDS.items():
        for key in ("command", "seed", "env_steps", "wall_time_s", "return_mean", "return_std", "eval_episodes"):
            assert key in rec, (env_name, key)
        assert rec["eval_episodes"] >= 10
        path = bundled_expert_path(env_name)
        assert path.is_file() and path.stat().st_size < 1_000_000
        expert = load_expert(path)
        env = make_env(env_name)
        info = env_info(env)
        assert (expert.obs_dim, expert.act_dim) == (info.obs_dim, info.act_dim)


@pytest.mark.slow
@pytest.mark.parametrize("env_name", sorted(RECORDS))
def test_bundled_expert_reaches_its_recorded_return(env_name):
    paths = collect_expert_paths(load_expert(bundled_expert_path(env_name)), env_name, n_traj=2, seed=1)
    mean = np.mean([p["reward"].sum() for p in paths])
    assert mean >= 0.9 * RECORDS[env_name]["return_mean"], (mean, RECORDS[env_name]["return_mean"])


def test_no_bundled_expert_is_one_line_error_naming_the_tasks():
    with pytest.raises(BcjaxError) as e:
        bundled_expert_path("Humanoid-v4")
    msg = str(e.value)
    assert "Humanoid-v4" in msg and "Hopper-v4" in msg and "--expert_policy_file" in msg and "\n" not in msg


def test_task_without_bundled_expert_fails_cleanly(tmp_path, capsys):
    rc = train_main(["--env_name", "Pendulum-v1", "--logdir", str(tmp_path), "--video_log_freq", "-1",
                     "--rollout_workers", "0"])
    assert rc == 2
    assert capsys.readouterr().err.startswith("error: no bundled expert for Pendulum-v1")


def test_collect_expert_data_script(tmp_path, capsys):
    from bcjax.experts import collection as mod

    out = tmp_path / "data.pkl"
    assert mod.main(["--env_name", "Hopper-v4", "--n_traj", "2", "--ep_len", "30", "--output", str(out)]) == 0
    paths = load_expert_data(out)
    assert [len(p["reward"]) for p in paths] == [30, 30]
    assert all(p["terminal"][-1] == 1 for p in paths)
    printed = capsys.readouterr().out
    assert f"return {np.mean([p['reward'].sum() for p in paths]):.1f}" in printed


def test_zero_flag_dagger_run_end_to_end(tiny_run, capsys):
    """`train.py --algo dagger` with no expert flags (the session's tiny run): bundled expert, expert data
    collected and cached."""
    out = tiny_run.out
    assert "expert policy: bundled" in out and "expert data: collected 2 trajectories" in out
    cached = list((tiny_run.logdir / "expert_data").glob("*.pkl"))
    assert len(cached) == 1
    run_dir = tiny_run.run_dir
    cfg = json.loads((run_dir / "config.json").read_text())
    assert Path(cfg["expert_policy_file"]) == bundled_expert_path(cfg["env_name"])
    assert Path(cfg["expert_data"]) == cached[0]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    data_return = np.mean([p["reward"].sum() for p in load_expert_data(cached[0])])
    assert rows[0]["Initial_DataCollection_AverageReturn"] == pytest.approx(data_return)
    # a second run reuses the cached data: what it loads before it trains
    from bcjax.run.config import given_flags
    from bcjax.run.main import load_inputs, resolve_config

    again, _, paths = load_inputs(resolve_config(given_flags(tiny_run.argv)), env_info(make_env(cfg["env_name"])))
    assert "expert data: reusing" in capsys.readouterr().out
    assert Path(again.expert_data) == cached[0] and len(paths) == 2


@pytest.mark.slow
def test_dagger_improves_over_bc_with_the_bundled_expert(tmp_path, capsys):
    """The headline, with no expert flags (what a fresh clone runs): BC from the bundled expert's data learns
    to hop, and DAgger's later iterations beat that BC policy (iteration 0)."""
    from bcjax.run.logger import read_metrics

    # One DAgger iteration's evaluation is noisy (2 seeds, 2000 steps): at three iterations the margin depended on
    # the seed and on the platform's last bits (seed 3 cleared 1.2x until numpy 2.4.6 gave 657 against 626), so
    # the last two of five iterations are compared, on average, with BC.
    assert train_main(["--algo", "dagger", "--env_name", "Hopper-v4", "--n_iter", "5", "--num_seeds", "2", "--seed", "3",
                       "--eval_batch_size", "2000", "--video_log_freq", "-1", "--logdir", str(tmp_path),
                       "--exp_name", "x", "--quiet"]) == 0
    assert "expert policy: bundled" in capsys.readouterr().out
    (run_dir,) = tmp_path.glob("q2_x_Hopper-v4_*")
    rows = read_metrics(run_dir)
    bc, dagger = rows[0]["Eval_AverageReturn"], (rows[-2]["Eval_AverageReturn"] + rows[-1]["Eval_AverageReturn"]) / 2
    assert bc > 200, bc  # a fresh policy falls at once (return ~10-50)
    assert dagger > 1.2 * bc, (bc, dagger)
