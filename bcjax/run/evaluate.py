"""`scripts/evaluate.py`: reload a run's saved policy, run episodes, print return and length statistics."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from bcjax.errors import BcjaxError, run_script
from bcjax.run.config import check_seed
from bcjax.run.flags import REQUIRED, flag, parse, select_device


@dataclass
class EvalResult:
    iteration: int
    env_name: str
    returns: np.ndarray  # (seeds, episodes)
    lengths: np.ndarray  # (seeds, episodes)
    sampled: bool  # sampled actions (else the mean action)
    video: Path | None = None


def evaluate_run(run_dir: str | Path, step: int | None = None, episodes: int = 10, sample: bool | None = None,
                 seed: int = 0, seed_index: int | None = None, video: str | Path | None = None) -> EvalResult:
    """Run `episodes` episodes of each saved seed's policy (or only `seed_index`).

    Episode i of every seed starts from the env reset with `seed` (then the env's
    own stream), so seeds are compared on the same starts. `video` re-runs the
    first evaluated episode with rendering and writes it as an mp4. `sample` None: as the run's own
    evaluation did (sampled actions unless it trained with --deterministic_eval).
    """
    from bcjax.acting.gl import check_mujoco_gl_setting

    check_mujoco_gl_setting()  # before anything imports mujoco
    from bcjax.acting.envs import make_env
    from bcjax.acting.rollout import sample_n_trajectories
    from bcjax.core.model import host_actor
    from bcjax.run.checkpoint import load_policy

    saved = load_policy(run_dir, step)
    k_seeds = int(saved.meta["num_seeds"])
    if seed_index is not None and not 0 <= seed_index < k_seeds:
        raise BcjaxError(f"--seed_index {seed_index} out of range: the run trained {k_seeds} seed(s)")
    indices = range(k_seeds) if seed_index is None else [seed_index]
    env_name, ep_len = saved.meta["env_name"], int(saved.meta["ep_len"])
    sample = not saved.config.deterministic_eval if sample is None else sample

    def actor_for(k: int) -> Callable[[np.ndarray], np.ndarray]:
        return host_actor(saved.policy, saved.params(k), np.random.default_rng([seed, k]) if sample else None)

    returns, lengths = [], []
    with contextlib.closing(make_env(env_name)) as env:
        for k in indices:
            env.reset(seed=seed)
            paths = sample_n_trajectories(env, actor_for(k), episodes, ep_len)
            returns.append([float(p["reward"].sum()) for p in paths])
            lengths.append([len(p["reward"]) for p in paths])
    video_path = None if video is None else _video(env_name, actor_for(indices[0]), ep_len, seed, video)
    return EvalResult(saved.iteration, env_name, np.asarray(returns, float), np.asarray(lengths, float), sample, video_path)


def _video(env_name: str, actor: Callable[[np.ndarray], np.ndarray], ep_len: int, seed: int,
           out: str | Path) -> Path | None:
    """The first evaluated episode again, rendered to the mp4 `out`; without GL or ffmpeg a warning line
    (the statistics are already computed)."""
    from bcjax.acting.video import render_videos

    try:
        return render_videos(env_name, actor, 1, ep_len, seed, lambda _: Path(out))[0][0]
    except Exception as e:  # noqa: BLE001 - only the video is lost
        print(f"warning: no video ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
              "headless rendering needs GL: scripts/setup_gl.sh, MUJOCO_GL=egl or osmesa", file=sys.stderr)
        return None


def _stats(x: np.ndarray) -> str:
    return f"{x.mean():.1f} ± {x.std():.1f}  (min {x.min():.1f}, max {x.max():.1f})"


def format_result(run_dir: str | Path, r: EvalResult) -> str:
    mode = "sampled actions" if r.sampled else "mean actions"
    n_seeds, n_eps = r.returns.shape
    lines = [f"{run_dir}: iteration {r.iteration}, {r.env_name}, {n_eps} episodes x {n_seeds} seed(s), {mode}"]
    if n_seeds > 1:
        lines += [f"  seed {k}: return {_stats(r.returns[k])}, length {r.lengths[k].mean():.0f}" for k in range(n_seeds)]
    lines += [f"return          {_stats(r.returns)}", f"episode length  {_stats(r.lengths)}"]
    return "\n".join(lines + ([f"video: {r.video}"] if r.video is not None else []))


@dataclass(frozen=True)
class EvalArgs:
    """Evaluate a saved bcjax policy."""

    PROG: ClassVar[str] = "evaluate.py"
    run_dir: str = flag(REQUIRED, "a run directory (data/q2_...) with checkpoints/", positional=True)
    step: int | None = flag(None, "checkpoint iteration; unset: the latest")
    episodes: int = flag(10, "episodes per seed")
    sample: bool | None = flag(None, "sample actions; unset: as the run's training evaluation did (sampled unless "
                                     "--deterministic_eval)", alias=("--mean_action", False, "evaluate the mean action"))
    seed: int = flag(0, "env/noise seed of the evaluation")
    seed_index: int | None = flag(None, "only this one of the run's --num_seeds policies")
    video: str | None = flag(None, "also render the first episode to this mp4", metavar="OUT.mp4")
    no_gpu: bool = flag(False, "run JAX on the CPU")

    def __post_init__(self) -> None:
        if self.episodes <= 0:
            raise BcjaxError(f"--episodes must be positive, got {self.episodes}")
        check_seed(self.seed)


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args = parse(EvalArgs, argv)
        select_device(args.no_gpu)
        r = evaluate_run(args.run_dir, args.step, args.episodes, args.sample, args.seed, args.seed_index, args.video)
        print(format_result(args.run_dir, r))
        return 0

    return run_script(body)
