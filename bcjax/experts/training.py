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

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bcjax.errors import BcjaxError, run_script
from bcjax.run.config import DEFAULT_ENV
from bcjax.run.flags import flag, parse, select_device


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


def evaluate(env, host_params: dict, episodes: int) -> list[float]:
    """Returns of `episodes` episodes of the deterministic policy."""
    from functools import partial

    from bcjax.acting.rollout import sample_n_trajectories
    from bcjax.experts.sac import host_act

    paths = sample_n_trajectories(env, partial(host_act, host_params, rng=None), episodes, env.spec.max_episode_steps)
    return [float(p["reward"].sum()) for p in paths]


def train(ns: ExpertArgs) -> dict:
    import gymnasium as gym
    import jax
    import numpy as np

    from bcjax.run.compile_cache import enable_compile_cache

    enable_compile_cache()  # SAC's fused updates compile once per machine

    from bcjax.acting.envs import make_env
    from bcjax.data.expert import save_expert
    from bcjax.experts.sac import (
        SACConfig,
        create_sac_state,
        empty_buffer,
        export_cs285,
        host_act,
        host_actor_params,
        insert_rows,
        train_chunk,
    )
    from bcjax.run.checkpoint import checkpoint_steps, restore_checkpoint, save_checkpoint
    from bcjax.run.logger import RunLogger

    logdir = Path(ns.logdir or f"data/experts/{ns.env_name}_s{ns.seed}")
    ckpt_dir = logdir / "checkpoints"
    if ns.resume and not checkpoint_steps(ckpt_dir):
        raise BcjaxError(f"--resume: no checkpoint in {ckpt_dir}; train without --resume first")
    if not ns.resume and checkpoint_steps(ckpt_dir):
        raise BcjaxError(f"{logdir} already holds a run: add --resume to continue it, or pick another --logdir")
    logdir.mkdir(parents=True, exist_ok=True)

    env, eval_env = make_env(ns.env_name, ns.seed), make_env(ns.env_name, ns.seed + 10_000)
    if not isinstance(env.action_space, gym.spaces.Box):
        raise BcjaxError(f"{ns.env_name} has a {type(env.action_space).__name__} action space; SAC here needs Box")
    obs_dim, act_dim = env.observation_space.shape[0], int(np.prod(env.action_space.shape))
    cfg = SACConfig(hidden=tuple(ns.hidden), actor_lr=ns.lr, critic_lr=ns.lr, alpha_lr=ns.lr, gamma=ns.gamma,
                    tau=ns.tau, batch_size=ns.batch_size, target_entropy=-float(act_dim))
    state = create_sac_state(jax.random.PRNGKey(ns.seed), obs_dim, env.action_space.low, env.action_space.high, cfg)
    buffer = empty_buffer(ns.buffer_size, obs_dim, act_dim)

    step = pos = size = episodes = resumes = 0
    best, wall_before = -np.inf, 0.0
    learning_starts = ns.start_steps
    if ns.resume:
        from bcjax.run.checkpoint import restore_meta

        _, meta = restore_meta(ckpt_dir)
        template = {"sac": state, "buffer": buffer} if meta["has_buffer"] else {"sac": state}
        restored, meta = restore_checkpoint(ckpt_dir, template)
        state = restored["sac"]
        buffer = restored.get("buffer", buffer)
        step, episodes, resumes = meta["step"], meta["episodes"], meta["resumes"] + 1
        pos, size = (meta["pos"], meta["size"]) if meta["has_buffer"] else (0, 0)
        best, wall_before = meta["best_eval"], meta["wall_time"]
        if not meta["has_buffer"]:
            # Refill the empty buffer with the trained policy before updating again.
            learning_starts = step + ns.start_steps
        print(f"resumed {logdir} at env step {step} (buffer {'restored' if meta['has_buffer'] else 'refilled'})")
    with (logdir / "args.jsonl").open("a") as f:
        f.write(json.dumps({**vars(ns), "resumes": resumes, "start_step": step}) + "\n")

    logger = RunLogger(logdir)
    rng = np.random.default_rng(ns.seed + 7919 * resumes)
    env.action_space.seed(ns.seed + 7919 * resumes)
    obs, _ = env.reset(seed=ns.seed + 7919 * resumes)
    host = host_actor_params(state)
    pending = None  # actor weights of the last queued update, read after the next one is queued
    rows = {k: np.zeros((ns.chunk, *s), np.float32) for k, s in
            [("observation", (obs_dim,)), ("action", (act_dim,)), ("reward", ()), ("next_observation", (obs_dim,)),
             ("done", ())]}
    ep_ret, ep_len, recent, metrics = 0.0, 0, [], None
    t0, t_last, step_last = time.time(), time.time(), step
    next_eval = (step // ns.eval_every + 1) * ns.eval_every
    next_ckpt = (step // ns.ckpt_every + 1) * ns.ckpt_every
    stop_reason = "total_steps"

    def checkpoint() -> None:
        meta = {"step": step, "pos": pos, "size": size, "episodes": episodes, "resumes": resumes,
                "best_eval": float(best), "wall_time": wall_before + time.time() - t0,
                "has_buffer": not ns.no_buffer_in_checkpoint, "env_name": ns.env_name,
                "sac_config": dataclasses.asdict(cfg)}
        tree = {"sac": state} if ns.no_buffer_in_checkpoint else {"sac": state, "buffer": buffer}
        save_checkpoint(ckpt_dir, step, tree, meta, max_to_keep=2)

    while step < ns.total_steps:
        n = min(ns.chunk, ns.total_steps - step)
        for j in range(n):
            if step + j < ns.start_steps:  # uniform exploration only at the very start of training
                act = env.action_space.sample()
            else:
                act = host_act(host, np.asarray(obs, np.float32)[None], rng)[0]
            next_obs, r, term, trunc, _ = env.step(act)
            rows["observation"][j], rows["action"][j], rows["reward"][j] = obs, act, r
            rows["next_observation"][j], rows["done"][j] = next_obs, float(term)
            ep_ret, ep_len = ep_ret + float(r), ep_len + 1
            obs = next_obs
            if term or trunc:
                recent.append(ep_ret)
                episodes += 1
                ep_ret, ep_len = 0.0, 0
                obs, _ = env.reset()
        chunk = {k: v[:n] for k, v in rows.items()}
        step += n
        new_size = min(size + n, ns.buffer_size)
        if step >= learning_starts:
            state, buffer, metrics, actor_copy = train_chunk(
                state, buffer, chunk, np.int32(pos), np.int32(new_size), n_updates=n, batch_size=ns.batch_size,
                gamma=ns.gamma, tau=ns.tau, target_entropy=cfg.target_entropy)
            if pending is not None:
                host = host_actor_params(state, pending)  # already computed: the GPU is one chunk ahead
            pending = actor_copy
        else:
            buffer = insert_rows(buffer, chunk, np.int32(pos))
        pos, size = (pos + n) % ns.buffer_size, new_size

        out_of_time = ns.time_limit is not None and time.time() - t0 > ns.time_limit
        if step >= next_eval or step >= ns.total_steps or out_of_time:
            next_eval += ns.eval_every
            host_now = host_actor_params(state)
            rets = evaluate(eval_env, host_now, ns.eval_episodes)
            now = time.time()
            row = {"Eval_AverageReturn": float(np.mean(rets)), "Eval_StdReturn": float(np.std(rets)),
                   "Eval_MaxReturn": float(np.max(rets)), "Eval_MinReturn": float(np.min(rets)),
                   "Train_AverageReturn": float(np.mean(recent)) if recent else float("nan"),
                   "Train_EnvstepsSoFar": step, "Train_Episodes": episodes,
                   "TimeSinceStart": wall_before + now - t0,
                   "EnvstepsPerSecond": (step - step_last) / max(now - t_last, 1e-9)}
            if metrics is not None:
                row.update({k: float(v) for k, v in metrics.items()})
            logger.log_iteration(step, {k: [v] for k, v in row.items()})
            recent, t_last, step_last = [], now, step
            obs_sample = np.asarray(buffer["observation"][: max(size, 1)][-10_000:])
            expert = export_cs285(state, obs_sample)
            save_expert(expert, logdir / "expert_last.pkl")
            if row["Eval_AverageReturn"] > best:
                best = row["Eval_AverageReturn"]
                save_expert(expert, logdir / "expert_best.pkl")
        if step >= next_ckpt or step >= ns.total_steps or out_of_time:
            next_ckpt += ns.ckpt_every
            checkpoint()
        if out_of_time:
            stop_reason = "time_limit"
            break
    logger.close()
    final = logdir / "expert_last.pkl"
    if final.exists():
        (logdir / "expert.pkl").write_bytes(final.read_bytes())
    wall = wall_before + time.time() - t0
    print(f"stopped ({stop_reason}) at env step {step} after {wall:.0f} s in all; best eval {best:.1f}; "
          f"expert: {logdir / 'expert.pkl'}")
    return {"step": step, "wall_time": wall, "best_eval": float(best), "stop_reason": stop_reason}


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        ns = parse(ExpertArgs, argv)
        select_device(ns.no_gpu)
        from bcjax.acting.envs import ignore_outdated_task_warnings

        ignore_outdated_task_warnings()
        train(ns)
        return 0

    return run_script(body, "interrupted: continue with --resume from the last checkpoint")

