"""scripts/evaluate.py on a saved run: the restored policy scores what the in-memory one scores."""

from __future__ import annotations

import math

import jax
import pytest

from bcjax.acting.envs import make_env
from bcjax.acting.rollout import sample_n_trajectories
from bcjax.core.model import host_actor
from bcjax.run.evaluate import evaluate_run, main

# cartpole_run (conftest): a 2-seed DAgger run without --save_params, shared by the session.


def test_final_policy_is_saved_without_save_params(cartpole_run):
    run_dir, _ = cartpole_run
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["1"]
    assert not (run_dir / "resume").exists()


def test_evaluate_matches_a_rollout_of_the_trained_params(cartpole_run):
    run_dir, result = cartpole_run
    r = evaluate_run(run_dir, episodes=3, seed=5, sample=False)
    assert r.iteration == 1 and r.env_name == "CartPole-v1"
    assert r.returns.shape == r.lengths.shape == (2, 3)
    for k in range(2):  # independent truth: the same episodes run with the in-memory parameters
        env = make_env("CartPole-v1")
        env.reset(seed=5)
        params = jax.tree.map(lambda x, k=k: x[k], result.states.params)
        paths = sample_n_trajectories(env, host_actor(result.policy, params, None), 3, 500)
        assert r.returns[k].tolist() == [float(p["reward"].sum()) for p in paths]
        assert r.lengths[k].tolist() == [len(p["reward"]) for p in paths]


def test_evaluate_cli_prints_statistics(cartpole_run, capsys):
    run_dir, _ = cartpole_run
    assert main([str(run_dir), "--episodes", "2", "--sample", "--seed_index", "1"]) == 0
    out = capsys.readouterr().out
    assert "iteration 1, CartPole-v1, 2 episodes x 1 seed(s), sampled actions" in out
    assert "return " in out and "(min " in out and "episode length" in out


def test_evaluate_defaults_to_the_runs_own_evaluation_mode(cartpole_run, capsys):
    run_dir, _ = cartpole_run  # trained without --deterministic_eval: its evaluation sampled
    assert main([str(run_dir), "--episodes", "1"]) == 0
    assert "sampled actions" in capsys.readouterr().out
    assert main([str(run_dir), "--episodes", "1", "--mean_action"]) == 0
    assert "mean actions" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--step", "7"], "no checkpoint step 7"),
    (["--episodes", "0"], "--episodes must be positive"),
    (["--seed_index", "2"], "--seed_index 2 out of range"),
    (["--sample", "--mean_action"], "--mean_action contradicts --sample"),
])
def test_evaluate_bad_input_is_one_line(cartpole_run, capsys, argv, message):
    run_dir, _ = cartpole_run
    assert main([str(run_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.fixture
def hopper_run(tiny_run):
    return tiny_run.run_dir  # the session's tiny Hopper run (--ep_len 30)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:os.fork")  # reading the mp4 back spawns ffmpeg
def test_evaluate_writes_the_first_episode_as_video(hopper_run, tmp_path, capsys):
    import imageio.v2 as imageio

    from bcjax.acting.gl import configure_gl, gl_problem

    problem = gl_problem(configure_gl())
    if problem:
        pytest.skip(f"no headless GL ({problem}); install it with scripts/setup_gl.sh")
    out = tmp_path / "eval.mp4"
    assert main([str(hopper_run), "--episodes", "2", "--video", str(out)]) == 0
    assert f"video: {out}" in capsys.readouterr().out
    first_len = evaluate_run(hopper_run, episodes=1).lengths[0, 0]
    assert 0 < first_len <= 30  # the run's ep_len caps the episode
    # the video re-runs evaluation episode 1 (same seed, mean actions); Hopper renders every 5th step
    with imageio.get_reader(out) as r:
        assert r.count_frames() == math.ceil(first_len / 5)


def test_evaluate_without_gl_still_prints_statistics(hopper_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BCJAX_NO_GL", "1")  # the GL probe reports no GL, as on a machine without it
    out = tmp_path / "x.mp4"
    assert main([str(hopper_run), "--episodes", "1", "--video", str(out)]) == 0
    stdout, err = capsys.readouterr()
    assert "return " in stdout and "video:" not in stdout
    notices = [line for line in err.splitlines() if line.startswith("warning: no video")]
    assert len(notices) == 1 and "BCJAX_NO_GL is set" in notices[0]
    assert not out.exists()
