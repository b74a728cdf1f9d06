"""Run configuration: the CS285 flags (same names, short forms, defaults) plus bcjax's own.

`Config` is the one source of every flag: each field's default, help text, short
form and choices build train.py's parser (`bcjax.run.flags`), so a new flag is one
field (and its check, if it has one, in `_check`). A Config is checked when it is
made, by the parser or in code. This module imports neither JAX nor gymnasium:
parsing flags must not start JAX before the device is chosen.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import ClassVar

from bcjax.errors import BcjaxError
from bcjax.run.flags import check_choices, flag, given, to_argv

# The zero-flag run's task: with the bundled (SAC) Ant expert, BC from its 2 trajectories stays far
# below the expert and DAgger climbs to ~90% of it in 10 iterations (the bundled Hopper and
# HalfCheetah SAC experts are too sharp for the homework's 2x64 student to reach in 10 iterations).
DEFAULT_ENV = "Ant-v4"
DEFAULT_DAGGER_ITERS = 10

# The activations bcjax.core.model knows (its test checks the two agree).
ACTIVATION_NAMES = ("identity", "leaky_relu", "relu", "selu", "sigmoid", "softplus", "tanh")
# JAX keys take 32-bit seeds (PRNGKey(2**32) == PRNGKey(0)): refuse the seeds that would alias.
SEED_MAX = 2**32 - 1
# --recipe: presets of flags (docs/BC_STUDY.md measured them); flags given explicitly win over a preset's.
RECIPES = {"homework": {}, "robust": {"normalize_obs": True, "num_agent_train_steps_per_iter": 20000,
                                     "lr_schedule": "cosine"}}


@dataclass(frozen=True)
class Config:
    """Behavioral Cloning and DAgger (CS285 hw1) in JAX/Flax. 'Training Loss' is the Gaussian negative
    log-likelihood of the expert's actions: it goes below 0 as the policy's sigma shrinks ('Policy_Std*' and
    'Training MSE' are logged beside it)."""

    PROG: ClassVar[str] = "train.py"
    PRESETS: ClassVar[dict] = {"recipe": RECIPES}  # bcjax.run.flags: --recipe NAME gives these flags' values
    # Unset (None) algo and n_iter are resolved when the Config is made: bc, and 1 or DEFAULT_DAGGER_ITERS.
    algo: str | None = flag(None, "bc (one iteration) or dagger; unset: bc", choices=("bc", "dagger"),
                            alias=("--do_dagger", "dagger", "same as --algo dagger"))
    expert_policy_file: str | None = flag(None, "CS285 expert .pkl; unset: the bundled expert for the task", "-epf",
                                           resumable=True)  # the files it used, maybe moved (checked on load)
    expert_data: str | None = flag(None, "CS285 expert data .pkl, a Minari dataset directory or minari:DATASET_ID; "
                                         "unset: collected from the expert", "-ed", resumable=True)
    expert_data_trajectories: int | None = flag(None, "use the first N trajectories of the expert data; unset: all "
                                                      "(without --expert_data, 2 are collected)", metavar="N")
    env_name: str = flag(DEFAULT_ENV, "gymnasium task id", "-env")
    exp_name: str = flag("run", "name in the run directory", "-exp")
    ep_len: int | None = flag(None, "max episode length; unset: the task's max_episode_steps")
    num_agent_train_steps_per_iter: int = flag(1000, "gradient steps per iteration")
    n_iter: int | None = flag(None, f"iterations; unset: 1 for bc, {DEFAULT_DAGGER_ITERS} for dagger", "-n")
    batch_size: int = flag(1000, "env steps collected per DAgger iteration")
    eval_batch_size: int = flag(1000, "env steps of evaluation per iteration")
    train_batch_size: int = flag(100, "minibatch size of each update")
    # -l and -s as in CS285's later homeworks: without them argparse read -l 3 as an abbreviation of -lr
    n_layers: int = flag(2, "hidden layers of the policy", "-l")
    size: int = flag(64, "units per hidden layer", "-s")
    activation: str = flag("tanh", "hidden-layer activation", choices=ACTIVATION_NAMES)
    init: str = flag("torch", "layer initialisation: torch (the homework's nn.Linear: uniform in ±1/sqrt(fan_in)) "
                               "or flax (lecun-normal, zero bias)", choices=("torch", "flax"))
    learning_rate: float = flag(5e-3, "Adam step size", "-lr")
    video_log_freq: int = flag(5, "iterations between videos; -1 disables", resumable=True)
    scalar_log_freq: int = flag(1, "iterations between evaluations/logs; -1 disables")
    no_gpu: bool = flag(False, "run JAX on the CPU", "-ngpu", resumable=True)
    no_compile_cache: bool = flag(False, "do not use JAX's persistent compilation cache (default: in the user's cache "
                                          "directory, or BCJAX_CACHE_DIR)", resumable=True)
    which_gpu: int = flag(0, "GPU index (sets CUDA_VISIBLE_DEVICES; unset: an existing CUDA_VISIBLE_DEVICES is kept)",
                           resumable=True)
    max_replay_buffer_size: int = flag(1_000_000, "ring buffer capacity (rows)")
    save_params: bool = flag(False, "checkpoint the policy after every iteration")
    seed: int = flag(1, "seed of the run; seed index k of --num_seeds uses fold_in(PRNGKey(seed), k)")
    logdir: str = flag("data", "root of the run directories")
    num_seeds: int = flag(1, "independent policies trained side by side (vmapped)")
    num_envs: int | None = flag(None, "envs per seed stepped side by side in collection and evaluation; results do not "
                                      "depend on it (unset: as many as whole episodes fit in the phase's steps, at most 8)")
    eval_num_envs: int | None = flag(None, "envs per seed side by side in evaluation alone; unset: --num_envs")
    vector_mode: str = flag("auto", "no effect: the envs of all seeds step together in one MuJoCo batch (kept so older "
                                     "command lines run)", choices=("auto", "sync", "async"))
    rollout_workers: int | None = flag(
        None, "threads that step the MuJoCo batch of collection and evaluation (default: one per core, at most 8; 0: "
              "one); results do not depend on it", metavar="N")
    cpu_threads: int = flag(1, "threads of JAX's CPU pool, set by scripts/train.py (1 is faster for small nets on a "
                                "small shared CPU; 0: all cores)", resumable=True)
    deterministic_eval: bool = flag(False, "evaluate the mean action instead of sampling")
    quiet: bool = flag(False, "no progress bars", resumable=True)
    allow_weak_expert: bool = flag(False, "train even when the expert's check episode returns under half of its data's return")
    resume: str | None = flag(None, "continue an interrupted run", metavar="RUN_DIR", resumable=True)
    resume_step: int | None = flag(None, "with --resume: continue after iteration N (default: the latest saved; the "
                                         "one before is kept too)", metavar="N", resumable=True)
    beta_schedule: str = flag("none", "DAgger: the expert drives each collection step with probability beta_i (linear: "
                                      "max(0, 1 - i/beta_iters); exponential: beta0 * beta_decay^i); none: the policy "
                                      "always drives (the homework)", choices=("none", "linear", "exponential"))
    beta0: float | None = flag(None, "exponential schedule's beta at iteration 0, in [0, 1]; unset: 1")
    beta_decay: float | None = flag(None, "exponential schedule's factor per iteration, in (0, 1]")
    beta_iters: int | None = flag(None, "linear schedule: iterations until beta reaches 0")
    normalize_obs: bool = flag(False, "standardise the policy's input with the mean and std of the buffer's observations")
    ensemble: int = flag(1, "policies per seed, trained side by side on its data (own init and minibatches), acting and "
                            "evaluated as one policy with their mean action: --num_seeds S --ensemble E trains S x E")
    weight_decay: float = flag(0.0, "AdamW's decoupled weight decay of the kernels (optax.adamw: each update shrinks "
                                    "them by learning_rate x weight_decay); 0: Adam, the homework's")
    lr_schedule: str = flag("constant", "step size over the run's updates: constant, or cosine (decayed to 0)",
                            choices=("constant", "cosine"))

    def __post_init__(self) -> None:
        algo, n_iter = _resolve_iterations(self.algo, self.n_iter)
        object.__setattr__(self, "algo", algo)  # frozen: set once, here
        object.__setattr__(self, "n_iter", n_iter)
        # Absolute: config.json records them, and a resume may start from another directory.
        for name in ("expert_policy_file", "expert_data"):
            value = getattr(self, name)
            if value and not value.startswith("minari:"):  # a Minari id is not a path
                object.__setattr__(self, name, os.path.abspath(os.path.expanduser(value)))
        check_choices(self)
        _check(self)

    @property
    def is_dagger(self) -> bool:
        return self.algo == "dagger"

    @property
    def optimizer(self) -> tuple[float, float, int | None]:
        """bcjax.core.update.optimizer's arguments: step size, weight decay, the updates a cosine schedule spans."""
        steps = self.n_iter * self.num_agent_train_steps_per_iter if self.lr_schedule == "cosine" else None
        return self.learning_rate, self.weight_decay, steps

    def replace(self, **kw: object) -> "Config":
        return dataclasses.replace(self, **kw)


RESUME_RUNTIME_FLAGS = tuple(f.name for f in dataclasses.fields(Config) if f.metadata.get("resumable"))


def config_dict(cfg: Config) -> dict:
    """The config as config.json and checkpoints store it."""
    return dataclasses.asdict(cfg)


def config_from_dict(d: dict) -> Config:
    """The Config of a stored dict; names it does not know (an older or newer bcjax's) are dropped."""
    names = {f.name for f in dataclasses.fields(Config)}
    return Config(**{k: v for k, v in d.items() if k in names})


def parse_config(argv: list[str] | None = None) -> Config:
    """train.py's Config from its flags (without --resume's reading of the run directory)."""
    return Config(**given_flags(argv))


def config_argv(cfg: Config) -> list[str]:
    """train.py's flags for `cfg` (a recorded command): those not at their defaults, and always the task and algorithm."""
    return to_argv(cfg, always=("env_name", "algo"))


def given_flags(argv: list[str] | None) -> dict:
    """The fields train.py's flags give (not defaulted), with their parsed values."""
    return given(Config, argv)[0]


def _resolve_iterations(algo: str | None, n_iter: int | None) -> tuple[str, int]:
    """Unset algo: bc; unset n_iter: 1 for BC (which runs exactly one), DEFAULT_DAGGER_ITERS for DAgger."""
    if (algo or "bc") == "bc":
        if n_iter not in (None, 1):
            raise BcjaxError(f"BC runs exactly one iteration, got --n_iter {n_iter}: drop --n_iter or use --algo dagger")
        return "bc", 1
    n_iter = DEFAULT_DAGGER_ITERS if n_iter is None else n_iter
    if n_iter < 2:
        raise BcjaxError(f"DAgger needs more than one iteration, got --n_iter {n_iter}: use --n_iter 2 or more, or --algo bc")
    return algo, n_iter


def check_seed(seed: int) -> int:
    if not 0 <= seed <= SEED_MAX:
        raise BcjaxError(f"--seed must be between 0 and {SEED_MAX} (JAX keys are 32-bit), got {seed}")
    return seed


def _check_beta(cfg: Config) -> None:
    """Each beta flag belongs to one schedule, and every schedule to DAgger."""
    sched = cfg.beta_schedule
    if sched != "none" and not cfg.is_dagger:
        raise BcjaxError(f"--beta_schedule {sched} mixes the expert into DAgger's collection: use --algo dagger")
    for name, owner in (("beta0", "exponential"), ("beta_decay", "exponential"), ("beta_iters", "linear")):
        if getattr(cfg, name) is not None and sched != owner:
            raise BcjaxError(f"--{name} belongs to --beta_schedule {owner}, not {sched}")
    if sched == "linear" and cfg.beta_iters is None:
        raise BcjaxError("--beta_schedule linear needs --beta_iters N")
    if sched == "exponential" and cfg.beta_decay is None:
        raise BcjaxError("--beta_schedule exponential needs --beta_decay")
    if cfg.beta0 is not None and not 0 <= cfg.beta0 <= 1:  # NaN fails too
        raise BcjaxError(f"--beta0 must be in [0, 1], got {cfg.beta0}")
    if cfg.beta_decay is not None and not 0 < cfg.beta_decay <= 1:
        raise BcjaxError(f"--beta_decay must be in (0, 1], got {cfg.beta_decay}")


MAX_THREADS = 256


def _check(cfg: Config) -> None:
    """The checks of single flags and of combinations; each failure names the flag and the fix."""
    for name in ("num_agent_train_steps_per_iter", "batch_size", "eval_batch_size", "train_batch_size", "size",
                 "learning_rate", "max_replay_buffer_size", "num_seeds", "ensemble", "num_envs", "eval_num_envs", "ep_len",
                 "expert_data_trajectories", "beta_iters"):  # (None: unset)
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value > 0):  # NaN compares false with everything
            raise BcjaxError(f"--{name} must be positive, got {value}")
    for name, zero in (("rollout_workers", " (one thread)"), ("cpu_threads", " (all cores)"),
                       ("n_layers", "")):
        if (getattr(cfg, name) or 0) < 0:
            raise BcjaxError(f"--{name} must be 0{zero} or more, got {getattr(cfg, name)}")
    if (cfg.rollout_workers or 0) > MAX_THREADS:  # each is an OS thread of this process, with its own stack
        raise BcjaxError(f"--rollout_workers is a thread count, at most {MAX_THREADS}, got {cfg.rollout_workers}: "
                         "more threads than cores only add overhead; leave it unset for one per core")
    for name in ("video_log_freq", "scalar_log_freq"):
        if getattr(cfg, name) == 0 or getattr(cfg, name) < -1:
            raise BcjaxError(f"--{name} must be positive or -1 (off), got {getattr(cfg, name)}")
    if not cfg.weight_decay >= 0:  # NaN fails too
        raise BcjaxError(f"--weight_decay must be 0 or more, got {cfg.weight_decay}")
    check_seed(cfg.seed)
    _check_beta(cfg)
    if cfg.resume_step is not None and not cfg.resume:
        raise BcjaxError("--resume_step needs --resume RUN_DIR")
    # The run directory is named after --exp_name: it must stay one path component under --logdir.
    if not cfg.exp_name or any(c in cfg.exp_name for c in "/\\\0") or cfg.exp_name.startswith("."):
        raise BcjaxError(f"--exp_name {cfg.exp_name!r} must be a plain name (no '/', '\\' or leading '.'): "
                         "it names a directory under --logdir")
