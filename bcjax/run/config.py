"""Run configuration: the CS285 flags (same names, short forms, defaults) plus bcjax's own.

`Config` is the one source of every flag: each field's default, help text, short
form and choices build the parser (`build_parser`), so a new flag is one field.
This module imports neither JAX nor gymnasium: parsing flags must not start JAX
before the device is chosen.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass

from bcjax.errors import BcjaxError

# The zero-flag run's task: with the bundled (SAC) Ant expert, BC from its 2 trajectories stays far
# below the expert and DAgger climbs to ~90% of it in 10 iterations (the bundled Hopper and
# HalfCheetah SAC experts are too sharp for the homework's 2x64 student to reach in 10 iterations).
DEFAULT_ENV = "Ant-v4"
DEFAULT_DAGGER_ITERS = 10

# The choices of flags whose values other modules interpret (bcjax.core.model, bcjax.acting.envs, bcjax.acting.rollout).
ACTIVATION_NAMES = ("identity", "leaky_relu", "relu", "selu", "sigmoid", "softplus", "tanh")
INITS = ("torch", "flax")
VECTOR_MODES = ("auto", "sync", "async")
BETA_SCHEDULES = ("none", "linear", "exponential")


def _flag(default: object, help: str, *short: str, choices: tuple[str, ...] | None = None,
          metavar: str | None = None, unset: bool = False, resumable: bool = False) -> object:
    """A Config field that is also a command-line flag.

    unset: the parser's default is None, resolved by `config_from_args` (the field holds the resolved default).
    resumable: a resumed run may set it anew (it changes how the run runs, not what it computes).
    """
    meta = {"help": help, "short": short, "choices": choices, "metavar": metavar, "unset": unset,
            "resumable": resumable}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Config:
    algo: str = _flag("bc", "bc (one iteration) or dagger; unset: bc", choices=("bc", "dagger"), unset=True)
    expert_policy_file: str | None = _flag(None, "CS285 expert .pkl; unset: the bundled expert for the task", "-epf",
                                           resumable=True)  # the files it used, maybe moved (checked on load)
    expert_data: str | None = _flag(
        None, "CS285 expert data .pkl, a Minari dataset directory or minari:DATASET_ID; unset: collected from the expert",
        "-ed", resumable=True)
    expert_data_trajectories: int | None = _flag(
        None, "use the first N trajectories of the expert data; unset: all (without --expert_data, 2 are collected)",
        metavar="N")
    env_name: str = _flag(DEFAULT_ENV, "gymnasium task id", "-env")
    exp_name: str = _flag("run", "name in the run directory", "-exp")
    ep_len: int | None = _flag(None, "max episode length; unset: the task's max_episode_steps")
    num_agent_train_steps_per_iter: int = _flag(1000, "gradient steps per iteration")
    n_iter: int = _flag(1, f"iterations; unset: 1 for bc, {DEFAULT_DAGGER_ITERS} for dagger", "-n", unset=True)
    batch_size: int = _flag(1000, "env steps collected per DAgger iteration")
    eval_batch_size: int = _flag(1000, "env steps of evaluation per iteration")
    train_batch_size: int = _flag(100, "minibatch size of each update")
    n_layers: int = _flag(2, "hidden layers of the policy")
    size: int = _flag(64, "units per hidden layer")
    activation: str = _flag("tanh", "hidden-layer activation", choices=ACTIVATION_NAMES)
    init: str = _flag("torch", "layer initialisation: torch (the homework's nn.Linear: uniform in ±1/sqrt(fan_in)) "
                               "or flax (lecun-normal, zero bias)", choices=INITS)
    learning_rate: float = _flag(5e-3, "Adam step size", "-lr")
    video_log_freq: int = _flag(5, "iterations between videos; -1 disables", resumable=True)
    scalar_log_freq: int = _flag(1, "iterations between evaluations/logs; -1 disables")
    no_gpu: bool = _flag(False, "run JAX on the CPU", "-ngpu", resumable=True)
    no_compile_cache: bool = _flag(False, "do not use JAX's persistent compilation cache (default: in the user's cache "
                                          "directory, or BCJAX_CACHE_DIR)", resumable=True)
    which_gpu: int = _flag(0, "GPU index (sets CUDA_VISIBLE_DEVICES; unset: an existing CUDA_VISIBLE_DEVICES is kept)",
                           resumable=True)
    max_replay_buffer_size: int = _flag(1_000_000, "ring buffer capacity (rows)")
    save_params: bool = _flag(False, "checkpoint the policy after every iteration")
    seed: int = _flag(1, "seed of the run; seed index k of --num_seeds uses fold_in(PRNGKey(seed), k)")
    logdir: str = _flag("data", "root of the run directories")
    num_seeds: int = _flag(1, "independent policies trained side by side (vmapped)")
    num_envs: int = _flag(1, "vector environments for collection and evaluation")
    vector_mode: str = _flag("auto", "sync: one process; async: a process per env; auto: async only with a core per "
                                     "env to spare", choices=VECTOR_MODES)
    rollout_workers: int | None = _flag(
        None, "worker processes that run collection and evaluation (default: one per core, at most 8; 0: in this "
              "process)", metavar="N")
    cpu_threads: int = _flag(1, "threads of JAX's CPU pool, set by scripts/train.py (1 is faster for small nets on a "
                                "small shared CPU; 0: all cores)", resumable=True)
    deterministic_eval: bool = _flag(False, "evaluate the mean action instead of sampling")
    quiet: bool = _flag(False, "no progress bars", resumable=True)
    allow_weak_expert: bool = _flag(False, "train even when the expert's check episode returns under half of its "
                                           "data's return")
    resume: str | None = _flag(None, "continue an interrupted run", metavar="RUN_DIR", resumable=True)
    resume_step: int | None = _flag(
        None, "with --resume: continue after iteration N (default: the latest saved; the one before is kept too)",
        metavar="N", resumable=True)
    beta_schedule: str = _flag(
        "none", "DAgger: the expert drives each collection step with probability beta_i (linear: max(0, 1 - "
                "i/beta_iters); exponential: beta0 * beta_decay^i); none: the policy always drives (the homework)",
        choices=BETA_SCHEDULES)
    beta0: float | None = _flag(None, "exponential schedule's beta at iteration 0, in [0, 1]; unset: 1")
    beta_decay: float | None = _flag(None, "exponential schedule's factor per iteration, in (0, 1]")
    beta_iters: int | None = _flag(None, "linear schedule: iterations until beta reaches 0")
    normalize_obs: bool = _flag(False, "standardise the policy's input with the mean and std of the buffer's "
                                       "observations")

    @property
    def is_dagger(self) -> bool:
        return self.algo == "dagger"

    def replace(self, **kw: object) -> "Config":
        return dataclasses.replace(self, **kw)


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
RESUME_RUNTIME_FLAGS = tuple(f.name for f in dataclasses.fields(Config) if f.metadata["resumable"])


def config_dict(cfg: Config) -> dict:
    """The config as config.json and checkpoints store it."""
    return dataclasses.asdict(cfg)


def config_from_dict(d: dict) -> Config:
    """The Config of a stored dict; names it does not know (an older or newer bcjax's) are dropped."""
    names = {f.name for f in dataclasses.fields(Config)}
    return Config(**{k: v for k, v in d.items() if k in names})


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """train.py's parser, built from Config's fields; defaults=False: only the flags given land in the namespace."""
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Behavioral Cloning and DAgger (CS285 hw1) in JAX/Flax. 'Training Loss' is the Gaussian "
                    "negative log-likelihood of the expert's actions: it goes below 0 as the policy's sigma shrinks "
                    "('Policy_Std*' and 'Training MSE' are logged beside it).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=None if defaults else argparse.SUPPRESS,
    )
    for f in dataclasses.fields(Config):
        m = f.metadata
        kw: dict = {"help": m["help"]}
        if defaults:
            kw["default"] = None if m["unset"] else f.default
        kind = _TYPES[f.type.removesuffix(" | None")]
        if kind is bool:
            kw["action"] = "store_true"
        else:
            kw.update(type=None if kind is str else kind, choices=m["choices"], metavar=m["metavar"])
        p.add_argument(f"--{f.name}", *m["short"], **kw)
        if f.name == "algo":  # the homework's switch, beside the flag it stands for
            p.add_argument("--do_dagger", action="store_true", help="same as --algo dagger")
    return p


def flag_options() -> dict[str, tuple[str, bool]]:
    """Each option string of train.py (--name and its short forms) -> (its name, whether it is an on/off switch)."""
    out = {"--do_dagger": ("do_dagger", True)}
    for f in dataclasses.fields(Config):
        for option in (f"--{f.name}", *f.metadata["short"]):
            out[option] = (f.name, f.type == "bool")
    return out


def explicit_flags(argv: list[str] | None) -> dict:
    """The flags given on the command line (not defaulted), with their parsed values."""
    return vars(build_parser(defaults=False).parse_args(argv))


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
