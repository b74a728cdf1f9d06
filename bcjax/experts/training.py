"""`scripts/train_expert.py`: train an expert with SAC and export it in the CS285 expert format.

    python scripts/train_expert.py --env_name Hopper-v4
    python scripts/train_expert.py --env_name Hopper-v4 --resume   # continue after an interruption

Acting runs in numpy on the host; every `--chunk` env steps the new transitions
go into the on-device replay ring and that many SAC updates run in one fused
jitted call, queued asynchronously while the next chunk is collected. Every
`--eval_every` steps the deterministic policy is evaluated and exported
(expert_last.pkl, and expert_best.pkl when it is the best so far); every
`--ckpt_every` steps (and at the end or at `--time_limit`) an orbax checkpoint
of the train state and replay buffer is written for `--resume`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import gymnasium as gym
import numpy as np

from bcjax.acting.envs import ignore_outdated_task_warnings, make_env
from bcjax.acting.gl import check_mujoco_gl_setting
from bcjax.acting.rollout import episode_stats, sample_n_trajectories
from bcjax.data.files import append_line
from bcjax.errors import BcjaxError, run_script
from bcjax.run.config import DEFAULT_ENV, check_seed
from bcjax.run.flags import flag, parse, select_device
from bcjax.run.logger import RunLogger


@dataclass(frozen=True)
class ExpertArgs:
    """Train a SAC expert and export it (CS285 format)."""

    PROG: ClassVar[str] = "train_expert.py"
    env_name: str = flag(DEFAULT_ENV, "gymnasium task with a Box action space", "-env")
    total_steps: int = flag(1_000_000, "env steps in all (a resumed run counts the earlier ones)")
    seed: int = flag(1, "seed of the networks, the environment and the exploration")
    hidden: tuple[int, ...] = flag((256, 256), "hidden sizes of actor and critics")
    batch_size: int = flag(256, "minibatch size of each update")
    lr: float = flag(3e-4, "learning rate of actor, critics and temperature")
    gamma: float = flag(0.99, "discount")
    tau: float = flag(0.005, "target networks' step toward the critics")
    start_steps: int = flag(10_000, "uniform random actions before the first update")
    chunk: int = flag(50, "env steps per fused update call (one update per env step)")
    buffer_size: int = flag(1_000_000, "replay buffer capacity (transitions)")
    eval_every: int = flag(10_000, "env steps between evaluations (and exports)")
    eval_episodes: int = flag(5, "episodes of each evaluation")
    ckpt_every: int = flag(50_000, "env steps between checkpoints")
    no_buffer_in_checkpoint: bool = flag(
        False, "checkpoint only the train state (small); a resume then refills the buffer with the current policy")
    time_limit: float | None = flag(None, "seconds; then checkpoint, export and stop (resume later)")
    logdir: str | None = flag(None, "run directory; unset: data/experts/<env>_s<seed>")
    resume: bool = flag(False, "continue from the latest checkpoint in --logdir")
    no_gpu: bool = flag(False, "run JAX on the CPU")

    def __post_init__(self) -> None:
        for name in ("total_steps", "batch_size", "chunk", "buffer_size", "eval_every", "eval_episodes", "ckpt_every"):
            if getattr(self, name) <= 0:
                raise BcjaxError(f"--{name} must be positive, got {getattr(self, name)}")
        if any(h <= 0 for h in self.hidden):
            raise BcjaxError(f"--hidden sizes must be positive, got {list(self.hidden)}")
        if self.start_steps < self.batch_size:
            raise BcjaxError(f"--start_steps ({self.start_steps}) must be at least --batch_size ({self.batch_size})")
        if not 0 < self.tau <= 1 or not 0 <= self.gamma < 1:
            raise BcjaxError("--tau must be in (0, 1] and --gamma in [0, 1)")
        check_seed(self.seed)


class _Run:
    """One SAC run: the networks, the replay ring, the counters a checkpoint keeps, and the acting state."""

    def __init__(self, ns: ExpertArgs) -> None:
        import jax

        from bcjax.experts.sac import FIELDS, SACConfig, create_sac_state, empty_buffer, host_actor_params
        from bcjax.run.checkpoint import checkpoint_steps

        self.ns, self.logdir = ns, Path(ns.logdir or f"data/experts/{ns.env_name}_s{ns.seed}")
        self.ckpt_dir = self.logdir / "checkpoints"
        if ns.resume != bool(checkpoint_steps(self.ckpt_dir)):
            raise BcjaxError(f"--resume: no checkpoint in {self.ckpt_dir}; train without --resume first" if ns.resume else
                             f"{self.logdir} already holds a run: add --resume to continue it, or pick another --logdir")
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.env = gym.wrappers.RecordEpisodeStatistics(make_env(ns.env_name, ns.seed))  # its info has each return
        self.eval_env = make_env(ns.env_name, ns.seed + 10_000)
        space = self.env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise BcjaxError(f"{ns.env_name} has a {type(space).__name__} action space; SAC here needs Box")
        obs_dim = self.env.observation_space.shape[0]
        self.cfg = SACConfig(hidden=tuple(ns.hidden), lr=ns.lr, gamma=ns.gamma, tau=ns.tau, batch_size=ns.batch_size)
        self.state = create_sac_state(jax.random.PRNGKey(ns.seed), obs_dim, space.low, space.high, self.cfg)
        self.buffer = empty_buffer(ns.buffer_size, obs_dim, int(np.prod(space.shape)))
        self.step = self.episodes = self.resumes = 0
        self.best, self.wall_before, self.learning_starts = -np.inf, 0.0, ns.start_steps
        if ns.resume:
            self.restore()
        append_line(self.logdir / "args.jsonl", json.dumps({**vars(ns), "resumes": self.resumes, "start_step": self.step}))
        self.logger = RunLogger(self.logdir)
        seed = ns.seed + 7919 * self.resumes
        self.rng = np.random.default_rng(seed)
        space.seed(seed)
        self.obs, _ = self.env.reset(seed=seed)
        self.host, self.pending = host_actor_params(self.state), None  # pending: actor weights of the last queued update
        # A chunk's rows on the host, in FIELDS order (the ring's dict is key-sorted once it went through jit).
        self.rows = {f: np.zeros((ns.chunk, *self.buffer.data[f].shape[2:]), np.float32) for f in FIELDS}
        self.recent, self.metrics = [], None
        self.t0 = self.t_last = time.time()
        self.step_last = self.step

    def restore(self) -> None:
        from bcjax.run.checkpoint import restore_checkpoint, restore_meta

        has_buffer = restore_meta(self.ckpt_dir)[1]["has_buffer"]
        template = {"sac": self.state, "buffer": self.buffer} if has_buffer else {"sac": self.state}
        try:
            restored, meta = restore_checkpoint(self.ckpt_dir, template)
        except ValueError:  # orbax: the saved tree is not this run's
            raise BcjaxError(f"cannot resume from {self.ckpt_dir}: its saved state does not fit this run (another "
                             "--hidden, or a checkpoint from before the replay ring was bcjax.core.buffer's)") from None
        self.state, self.buffer = restored["sac"], restored.get("buffer", self.buffer)
        self.step, self.episodes, self.resumes = meta["step"], meta["episodes"], meta["resumes"] + 1
        self.best, self.wall_before = meta["best_eval"], meta["wall_time"]
        if not has_buffer:  # refill the empty buffer with the trained policy before updating again
            self.learning_starts = self.step + self.ns.start_steps
        print(f"resumed {self.logdir} at env step {self.step} (buffer {'restored' if has_buffer else 'refilled'})")

    def advance(self, n: int) -> None:
        """`n` env steps with the host actor (uniform actions before --start_steps); their rows into the ring,
        and (once learning started) `n` SAC updates, in one queued call."""
        from bcjax.experts.sac import host_act, host_actor_params, insert_rows, train_chunk

        for j in range(n):
            if self.step + j < self.ns.start_steps:  # uniform exploration only at the very start of training
                act = self.env.action_space.sample()
            else:
                act = host_act(self.host, np.asarray(self.obs, np.float32)[None], self.rng)[0]
            next_obs, r, term, trunc, info = self.env.step(act)
            for rows, value in zip(self.rows.values(), (self.obs, act, r, next_obs, float(term))):
                rows[j] = value
            self.obs = next_obs
            if term or trunc:
                self.recent.append(float(info["episode"]["r"]))
                self.episodes += 1
                self.obs, _ = self.env.reset()
        self.step += n
        rows, count = {f: v[None] for f, v in self.rows.items()}, np.array([n], np.int32)
        if self.step < self.learning_starts:
            self.buffer = insert_rows(self.buffer, rows, count)
            return
        self.state, self.buffer, self.metrics, actor_copy = train_chunk(self.state, self.buffer, rows, count, n, self.cfg)
        if self.pending is not None:
            self.host = host_actor_params(self.state, self.pending)  # already computed: the GPU is one chunk ahead
        self.pending = actor_copy

    def evaluate_and_export(self) -> None:
        """Evaluate the deterministic policy, log a row and export it (expert_last.pkl; expert_best.pkl if best)."""
        from bcjax.data.expert import save_expert
        from bcjax.experts.sac import export_cs285, host_act, host_actor_params

        policy = partial(host_act, host_actor_params(self.state), rng=None)  # the deterministic policy
        paths = sample_n_trajectories(self.eval_env, policy, self.ns.eval_episodes, self.eval_env.spec.max_episode_steps)
        now = time.time()
        row = {**episode_stats(paths, "Eval"),
               "Train_AverageReturn": float(np.mean(self.recent)) if self.recent else float("nan"),
               "Train_EnvstepsSoFar": self.step, "Train_Episodes": self.episodes,
               "TimeSinceStart": self.wall_before + now - self.t0,
               "EnvstepsPerSecond": (self.step - self.step_last) / max(now - self.t_last, 1e-9),
               **{k: float(v) for k, v in (self.metrics or {}).items()}}
        self.logger.log_iteration(self.step, {k: [v] for k, v in row.items()})
        self.recent, self.t_last, self.step_last = [], now, self.step
        stored = self.buffer.data["observation"][0, : max(int(self.buffer.size[0]), 1)]
        expert = export_cs285(self.state, np.asarray(stored[-10_000:]))
        save_expert(expert, self.logdir / "expert_last.pkl")
        if row["Eval_AverageReturn"] > self.best:
            self.best = row["Eval_AverageReturn"]
            save_expert(expert, self.logdir / "expert_best.pkl")

    def checkpoint(self) -> None:
        from bcjax.run.checkpoint import save_checkpoint

        keep_buffer = not self.ns.no_buffer_in_checkpoint
        meta = {"step": self.step, "episodes": self.episodes, "resumes": self.resumes, "best_eval": float(self.best),
                "wall_time": self.wall_before + time.time() - self.t0, "has_buffer": keep_buffer}
        tree = {"sac": self.state, "buffer": self.buffer} if keep_buffer else {"sac": self.state}
        save_checkpoint(self.ckpt_dir, self.step, tree, meta, max_to_keep=2)


def _crossed(step: int, n: int, every: int) -> bool:
    """The last `n` steps, up to `step`, passed a multiple of `every`."""
    return step // every > (step - n) // every


def train(ns: ExpertArgs) -> None:
    """Train (or with --resume continue) the SAC run `ns` describes, until --total_steps or --time_limit."""
    from bcjax.run.perf import enable_compile_cache

    enable_compile_cache()  # SAC's fused updates compile once per machine
    run, out_of_time = _Run(ns), False
    while run.step < ns.total_steps and not out_of_time:
        n = min(ns.chunk, ns.total_steps - run.step)
        run.advance(n)
        out_of_time = ns.time_limit is not None and time.time() - run.t0 > ns.time_limit
        last = out_of_time or run.step >= ns.total_steps
        if last or _crossed(run.step, n, ns.eval_every):
            run.evaluate_and_export()
        if last or _crossed(run.step, n, ns.ckpt_every):
            run.checkpoint()
    run.logger.close()
    final = run.logdir / "expert_last.pkl"
    if final.exists():
        (run.logdir / "expert.pkl").write_bytes(final.read_bytes())
    wall = run.wall_before + time.time() - run.t0
    print(f"stopped ({'time_limit' if out_of_time else 'total_steps'}) at env step {run.step} after {wall:.0f} s "
          f"in all; best eval {run.best:.1f}; expert: {run.logdir / 'expert.pkl'}")


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        ns = parse(ExpertArgs, argv)
        select_device(ns.no_gpu)
        check_mujoco_gl_setting()  # before gymnasium's MuJoCo envs import mujoco
        ignore_outdated_task_warnings()
        train(ns)
        return 0

    return run_script(body, "interrupted: continue with --resume from the last checkpoint")
