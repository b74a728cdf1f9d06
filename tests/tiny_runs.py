"""Tiny runs for the run-management tests: scripted experts, expert data made by a short rollout."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bcjax.acting.envs import make_env
from bcjax.acting.rollout import sample_n_trajectories
from bcjax.core.buffer import host_rows
from bcjax.run.config import Config
from bcjax.run.driver import RunResult, iterate, open_run


def cartpole_expert(obs: np.ndarray) -> np.ndarray:
    """Push the cart toward the side the pole falls to."""
    obs = np.asarray(obs)
    return (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int32)


def hopper_expert(obs: np.ndarray) -> np.ndarray:
    """Zero torques: the hopper stands a while, then falls (enough for pipeline tests)."""
    return np.zeros((len(obs), 3), np.float32)


def expert_data(env_name: str, expert, n: int = 2, ep_len: int = 100) -> list[dict]:
    return sample_n_trajectories(make_env(env_name, seed=0), expert, n, ep_len)


def cartpole_cfg(logdir: Path, **kw) -> Config:
    return Config(algo="dagger", n_iter=3, env_name="CartPole-v1", batch_size=120, num_agent_train_steps_per_iter=40,
                  eval_batch_size=120, video_log_freq=-1, logdir=str(logdir), quiet=True, rollout_workers=0).replace(**kw)


def hopper_cfg(logdir: Path, **kw) -> Config:
    return Config(algo="dagger", n_iter=2, env_name="Hopper-v4", ep_len=30, batch_size=60,
                  num_agent_train_steps_per_iter=20, eval_batch_size=60, video_log_freq=-1, logdir=str(logdir),
                  quiet=True, rollout_workers=0).replace(**kw)


def train(cfg: Config, expert, paths: list[dict]) -> RunResult:
    """A run without a run directory: `open_run`, then `iterate`."""
    with open_run(cfg, expert, paths) as run:
        return iterate(run)


def run_logged(cfg: Config, expert, paths: list[dict]) -> tuple[Path, RunResult]:
    """A run with a run directory (cfg.resume's for a resume) and a silent logger, as scripts/train.py runs it."""
    with open_run(cfg, expert, paths, logged=True, print_fn=lambda s: None) as run:
        return run.run_dir, iterate(run)


def stored(result: RunResult, k: int) -> dict[str, np.ndarray]:
    """Seed k's stored buffer rows, on the host (ring order: insertion order until the buffer wraps)."""
    return {name: host_rows(result.buffer, name)[k] for name in result.buffer.data}


def metrics_without_time(run_dir: Path) -> list[dict]:
    from bcjax.run.logger import read_metrics

    rows = []
    for row in read_metrics(run_dir):
        row = {k: v for k, v in row.items() if k != "TimeSinceStart"}
        row["per_seed"] = {k: v for k, v in row["per_seed"].items() if k != "TimeSinceStart"}
        rows.append(row)
    return rows


# scripts/train.py with no expert flags, shrunk: the bundled Hopper expert, 2 expert trajectories collected
# (30 steps each) and cached under the logdir, 2 DAgger iterations with checkpoints and resume state.
TINY_CLI = ["--algo", "dagger", "--env_name", "Hopper-v4", "--exp_name", "tiny", "-n", "2", "--ep_len", "30",
            "--batch_size", "60", "--eval_batch_size", "60", "--num_agent_train_steps_per_iter", "20",
            "--video_log_freq", "-1", "--save_params", "--rollout_workers", "0", "--quiet"]


@dataclass(frozen=True)
class CliRun:
    """A finished scripts/train.py run (the session's `tiny_run`): read it, never change it (copy it first)."""

    argv: list[str]
    logdir: Path
    run_dir: Path
    out: str  # what it printed

    def config(self) -> dict:
        return json.loads((self.run_dir / "config.json").read_text())


def cli_run(logdir: Path, argv: list[str] = TINY_CLI) -> CliRun:
    from bcjax.run.main import main

    argv = [*argv, "--logdir", str(logdir)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0, out.getvalue()[-2000:]
    (run_dir,) = logdir.glob("q*_*")
    return CliRun(argv, logdir, run_dir, out.getvalue())
