"""Run configuration: the CS285 flags (same names, short forms, defaults) plus bcjax's own."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass

from bcjax.envs import VECTOR_MODES
from bcjax.errors import BcjaxError
from bcjax.policy import ACTIVATIONS, INITS
from bcjax.rollout import BETA_SCHEDULES

# The zero-flag run's task: with the bundled (SAC) Ant expert, BC from its 2 trajectories stays far
# below the expert and DAgger climbs to ~90% of it in 10 iterations (the bundled Hopper and
# HalfCheetah SAC experts are too sharp for the homework's 2x64 student to reach in 10 iterations).
DEFAULT_ENV = "Ant-v4"
DEFAULT_DAGGER_ITERS = 10


@dataclass(frozen=True)
class Config:
    algo: str = "bc"
    expert_policy_file: str | None = None
    expert_data: str | None = None
    expert_data_trajectories: int | None = None
    env_name: str = DEFAULT_ENV
    exp_name: str = "run"
    ep_len: int | None = None
    num_agent_train_steps_per_iter: int = 1000
    n_iter: int = 1
    batch_size: int = 1000
    eval_batch_size: int = 1000
    train_batch_size: int = 100
    n_layers: int = 2
    size: int = 64
    activation: str = "tanh"
    init: str = "torch"
    learning_rate: float = 5e-3
    video_log_freq: int = 5
    scalar_log_freq: int = 1
    no_gpu: bool = False
    no_compile_cache: bool = False
    which_gpu: int = 0
    max_replay_buffer_size: int = 1_000_000
    save_params: bool = False
    seed: int = 1
    logdir: str = "data"
    num_seeds: int = 1
    num_envs: int = 1
    vector_mode: str = "auto"
    rollout_workers: int | None = None  # None: one per core this process may run on (at most 8)
    cpu_threads: int = 1
    deterministic_eval: bool = False
    per_step_updates: bool = False
    quiet: bool = False
    allow_weak_expert: bool = False
    resume: str | None = None
    resume_step: int | None = None
    beta_schedule: str = "none"
    beta0: float | None = None
    beta_decay: float | None = None
    beta_iters: int | None = None
    normalize_obs: bool = False

    @property
    def is_dagger(self) -> bool:
        return self.algo == "dagger"

    def replace(self, **kw: object) -> "Config":
        return dataclasses.replace(self, **kw)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Behavioral Cloning and DAgger (CS285 hw1) in JAX/Flax. 'Training Loss' is the Gaussian "
                    "negative log-likelihood of the expert's actions: it goes below 0 as the policy's sigma shrinks "
                    "('Policy_Std*' and 'Training MSE' are logged beside it).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--algo", choices=["bc", "dagger"], default=None, help="bc (one iteration) or dagger; unset: bc")
    a("--do_dagger", action="store_true", help="same as --algo dagger")
    a("--expert_policy_file", "-epf", default=None, help="CS285 expert .pkl; unset: the bundled expert for the task")
    a("--expert_data", "-ed", default=None,
      help="CS285 expert data .pkl, a Minari dataset directory or minari:DATASET_ID; unset: collected from the expert")
    a("--expert_data_trajectories", type=int, default=None, metavar="N",
      help="use the first N trajectories of the expert data; unset: all (without --expert_data, 2 are collected)")
    a("--env_name", "-env", default=DEFAULT_ENV, help="gymnasium task id")
    a("--exp_name", "-exp", default="run", help="name in the run directory")
    a("--ep_len", type=int, default=None, help="max episode length; unset: the task's max_episode_steps")
    a("--num_agent_train_steps_per_iter", type=int, default=1000, help="gradient steps per iteration")
    a("--n_iter", "-n", type=int, default=None, help=f"iterations; unset: 1 for bc, {DEFAULT_DAGGER_ITERS} for dagger")
    a("--batch_size", type=int, default=1000, help="env steps collected per DAgger iteration")
    a("--eval_batch_size", type=int, default=1000, help="env steps of evaluation per iteration")
    a("--train_batch_size", type=int, default=100, help="minibatch size of each update")
    a("--n_layers", type=int, default=2, help="hidden layers of the policy")
    a("--size", type=int, default=64, help="units per hidden layer")
    a("--activation", choices=sorted(ACTIVATIONS), default="tanh", help="hidden-layer activation")
    a("--init", choices=INITS, default="torch",
      help="layer initialisation: torch (the homework's nn.Linear: uniform in ±1/sqrt(fan_in)) or flax (lecun-normal, zero bias)")
    a("--learning_rate", "-lr", type=float, default=5e-3, help="Adam step size")
    a("--video_log_freq", type=int, default=5, help="iterations between videos; -1 disables")
    a("--scalar_log_freq", type=int, default=1, help="iterations between evaluations/logs; -1 disables")
    a("--no_gpu", "-ngpu", action="store_true", help="run JAX on the CPU")
    a("--no_compile_cache", action="store_true",
      help="do not use JAX's persistent compilation cache ($BCJAX_CACHE_DIR, else ~/.cache/bcjax/jax)")
    a("--which_gpu", type=int, default=0, help="GPU index (sets CUDA_VISIBLE_DEVICES)")
    a("--max_replay_buffer_size", type=int, default=1_000_000, help="ring buffer capacity (rows)")
    a("--save_params", action="store_true", help="checkpoint the policy after every iteration")
    a("--seed", type=int, default=1, help="seed of the run; seed index k of --num_seeds uses fold_in(PRNGKey(seed), k)")
    a("--logdir", default="data", help="root of the run directories")
    a("--num_seeds", type=int, default=1, help="independent policies trained side by side (vmapped)")
    a("--num_envs", type=int, default=1, help="vector environments for collection and evaluation")
    a("--vector_mode", choices=VECTOR_MODES, default="auto",
      help="sync: one process; async: a process per env; auto: async only with a core per env to spare")
    a("--rollout_workers", type=int, default=None, metavar="N",
      help="worker processes that run collection and evaluation (default: one per core, at most 8; 0: in this process)")
    a("--cpu_threads", type=int, default=1,
      help="threads of JAX's CPU pool (1 is faster for small nets on a small shared CPU; 0: all cores)")
    a("--deterministic_eval", action="store_true", help="evaluate the mean action instead of sampling")
    a("--per_step_updates", action="store_true", help="one jitted call per update instead of one fused scan")
    a("--quiet", action="store_true", help="no progress bars")
    a("--allow_weak_expert", action="store_true",
      help="train even when the expert's check episode returns under half of its data's return")
    a("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run")
    a("--resume_step", type=int, default=None, metavar="N",
      help="with --resume: continue after iteration N (default: the latest saved; the one before is kept too)")
    a("--beta_schedule", choices=BETA_SCHEDULES, default="none",
      help="DAgger: the expert drives each collection step with probability beta_i (linear: max(0, 1 - i/beta_iters); "
           "exponential: beta0 * beta_decay^i); none: the policy always drives (the homework)")
    a("--beta0", type=float, default=None, help="exponential schedule's beta at iteration 0, in [0, 1]; unset: 1")
    a("--beta_decay", type=float, default=None, help="exponential schedule's factor per iteration, in (0, 1]")
    a("--beta_iters", type=int, default=None, help="linear schedule: iterations until beta reaches 0")
    a("--normalize_obs", action="store_true",
      help="standardise the policy's input with the mean and std of the buffer's observations")
    return p


def _check_beta(ns: argparse.Namespace, algo: str) -> None:
    """Each beta flag belongs to one schedule, and every schedule to DAgger."""
    sched = ns.beta_schedule
    if sched != "none" and algo != "dagger":
        raise BcjaxError(f"--beta_schedule {sched} mixes the expert into DAgger's collection: use --algo dagger")
    for name, owner in (("beta0", "exponential"), ("beta_decay", "exponential"), ("beta_iters", "linear")):
        if getattr(ns, name) is not None and sched != owner:
            raise BcjaxError(f"--{name} belongs to --beta_schedule {owner}, not {sched}")
    if sched == "linear" and ns.beta_iters is None:
        raise BcjaxError("--beta_schedule linear needs --beta_iters N")
    if sched == "exponential" and ns.beta_decay is None:
        raise BcjaxError("--beta_schedule exponential needs --beta_decay")
    _positive("beta_iters", ns.beta_iters, allow_none=True)
    if ns.beta0 is not None and not 0 <= ns.beta0 <= 1:  # NaN fails too
        raise BcjaxError(f"--beta0 must be in [0, 1], got {ns.beta0}")
    if ns.beta_decay is not None and not 0 < ns.beta_decay <= 1:
        raise BcjaxError(f"--beta_decay must be in (0, 1], got {ns.beta_decay}")


def _positive(name: str, value: int | float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not math.isfinite(value) or value <= 0:  # NaN compares false with everything
        raise BcjaxError(f"--{name} must be positive, got {value}")


# JAX keys take 32-bit seeds (PRNGKey(2**32) == PRNGKey(0)): refuse the seeds that would alias.
SEED_MAX = 2**32 - 1


def check_seed(seed: int, flag: str = "--seed") -> int:
    if not 0 <= seed <= SEED_MAX:
        raise BcjaxError(f"{flag} must be between 0 and {SEED_MAX} (JAX keys are 32-bit), got {seed}")
    return seed


def check_exp_name(name: str) -> str:
    """The run directory is named after --exp_name: it must stay one path component under --logdir."""
    if not name or any(c in name for c in "/\\\0") or name.startswith("."):
        raise BcjaxError(f"--exp_name {name!r} must be a plain name (no '/', '\\' or leading '.'): "
                         "it names a directory under --logdir")
    return name


def config_from_args(ns: argparse.Namespace) -> Config:
    """Resolve and check the parsed flags; impossible combinations raise BcjaxError."""
    if ns.do_dagger and ns.algo == "bc":
        raise BcjaxError("--do_dagger contradicts --algo bc: pass one of them")
    algo = "dagger" if ns.do_dagger else (ns.algo or "bc")
    n_iter = ns.n_iter
    if algo == "bc":
        if n_iter is not None and n_iter != 1:
            raise BcjaxError(f"BC runs exactly one iteration, got --n_iter {n_iter}: drop --n_iter or use --algo dagger")
        n_iter = 1
    else:
        n_iter = DEFAULT_DAGGER_ITERS if n_iter is None else n_iter
        if n_iter < 2:
            raise BcjaxError(f"DAgger needs more than one iteration, got --n_iter {n_iter}: use --n_iter 2 or more, or --algo bc")
    for name in ("num_agent_train_steps_per_iter", "batch_size", "eval_batch_size", "train_batch_size",
                 "size", "learning_rate", "max_replay_buffer_size", "num_seeds", "num_envs"):
        _positive(name, getattr(ns, name))
    _positive("ep_len", ns.ep_len, allow_none=True)
    _positive("expert_data_trajectories", ns.expert_data_trajectories, allow_none=True)
    if ns.rollout_workers is not None and ns.rollout_workers < 0:
        raise BcjaxError(f"--rollout_workers must be 0 (rollouts in this process) or more, got {ns.rollout_workers}")
    if ns.cpu_threads < 0:
        raise BcjaxError(f"--cpu_threads must be 0 (all cores) or more, got {ns.cpu_threads}")
    if ns.n_layers < 0:
        raise BcjaxError(f"--n_layers must be 0 or more, got {ns.n_layers}")
    for name in ("video_log_freq", "scalar_log_freq"):
        v = getattr(ns, name)
        if v == 0 or v < -1:
            raise BcjaxError(f"--{name} must be positive or -1 (off), got {v}")
    check_seed(ns.seed)
    _check_beta(ns, algo)
    if ns.resume_step is not None and not ns.resume:
        raise BcjaxError("--resume_step needs --resume RUN_DIR")
    check_exp_name(ns.exp_name)
    fields = {f.name for f in dataclasses.fields(Config)}
    kw = {k: v for k, v in vars(ns).items() if k in fields}
    # Absolute: config.json records them, and a resume may start from another directory.
    for name in ("expert_policy_file", "expert_data"):
        if kw.get(name) and not kw[name].startswith("minari:"):  # a Minari id is not a path
            kw[name] = os.path.abspath(kw[name])
    kw.update(algo=algo, n_iter=n_iter)
    return Config(**kw)


def parse_config(argv: list[str] | None = None) -> Config:
    return config_from_args(build_parser().parse_args(argv))
