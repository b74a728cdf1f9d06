"""A sweep's options (scripts/sweep.py's flags) and its trials: tasks × algorithms × settings × seeds,
each trial a checked `Config` of one bcjax run."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from pathlib import Path
from typing import ClassVar

import numpy as np

from bcjax.errors import BcjaxError
from bcjax.run.config import DEFAULT_ENV, Config
from bcjax.run.flags import REQUIRED, flag, given, value_of


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepArgs:
    """Run a grid (or random search) of bcjax runs as Ray Tune trials: tasks x algorithms x settings x seeds.
    Every other flag goes to train.py for every trial."""

    PROG: ClassVar[str] = "sweep.py"
    # sets: the train.py fields this option sets per trial (so they cannot be swept or passed through).
    env_name: str = flag(DEFAULT_ENV, "comma-separated tasks", "-env", sets=("env_name",))
    algo: str = flag("bc", "bc, dagger or bc,dagger", sets=("algo",))
    seeds: str = flag("1", "seeds: 1-5, 1,3,7", sets=("seed", "num_seeds"))
    n_iter: int | None = flag(None, "DAgger iterations (BC trials run one)", "-n", sets=("n_iter",))
    exp_name: str = flag("sweep", "prefix of the trials' names", sets=("exp_name",))
    grid: tuple[str, ...] = flag((), "a train.py flag and its values; repeat it for a grid", metavar="NAME=V1,V2",
                                 repeat=True)
    sample: tuple[str, ...] = flag((), "random search (see --num_samples): uniform:A:B, loguniform:A:B, randint:A:B "
                                       "or choice:V1,V2", metavar="NAME=DIST", repeat=True)
    num_samples: int = flag(1, "random draws of the --sample flags per grid point")
    search_seed: int = flag(0, "seed of the random search's draws")
    seeds_per_trial: int | None = flag(None, "seeds side by side in a trial; unset: spread over free trial slots")
    out: str = flag(REQUIRED, "the sweep's folder: run directories, Tune's results, the summary", sets=("logdir", "resume"))
    address: str | None = flag(None, "an existing Ray cluster: HOST:6379, auto, or ray://HOST:10001 (with ray[client]); "
                                     "unset: a Ray of its own")
    storage: str | None = flag(None, "a folder all nodes share, or s3://, gs://: Tune's storage_path, where every "
                                     "trial's run directory and Tune's results go; unset: --out", metavar="PATH_OR_URI")
    num_cpus: int | None = flag(None, "CPUs of the embedded Ray; unset: all cores")
    cpus_per_trial: float = flag(1.0, "CPUs Ray reserves for each trial")
    gpus_per_trial: float = flag(0.0, "GPUs (or a fraction) Ray reserves for each trial")
    max_concurrent: int | None = flag(None, "at most this many trials at once")
    scheduler: str | None = flag(None, "asha: stop bad settings early on --metric", choices=("asha",))
    metric: str = flag("Eval_AverageReturn", "the metric the summary and the scheduler use")
    mode: str = flag("max", "whether --metric is better high or low", choices=("max", "min"))
    grace_period: int = flag(1, "asha: iterations every trial runs before it may be stopped")
    verbose: int = flag(0, "Tune's own progress tables (1, or 2 for every result) beside a line per trial event")

    def __post_init__(self) -> None:
        from bcjax.run.logger import METRICS

        if self.num_samples < 1 or self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise BcjaxError("--num_samples and --cpus_per_trial must be positive, --gpus_per_trial 0 or more")
        if self.metric not in METRICS:
            raise BcjaxError(f"--metric {self.metric!r} is not a logged metric: one of {', '.join(METRICS)}")
        parse_seeds(self.seeds)


# The train.py field -> the sweep option that sets it per trial.
OWNER = {name: f"--{f.name}" for f in dataclasses.fields(SweepArgs) for name in f.metadata.get("sets", ())}


@dataclasses.dataclass(frozen=True)
class Trial:
    key: str  # unique and readable: the Tune trial's name and its run root <out>/runs/<key>
    setting: dict[str, str]  # the swept flags' values as given (they name the trial and its group)
    config: Config  # the run (its --logdir aside: the trial sets it under the sweep's folder)

    @property
    def seeds(self) -> tuple[int, ...]:  # consecutive: trained side by side
        return tuple(range(self.config.seed, self.config.seed + self.config.num_seeds))

    @property
    def group(self) -> tuple[str, str, str]:  # trials of one setting on one task: their seeds are pooled
        return self.config.env_name, self.config.algo, self.config.exp_name


def train_flags(tokens: list[str]) -> dict:
    """The train.py flags passed through (every trial's), as fields."""
    fields, rest = given(Config, tokens, strict=True, known=True)
    if rest:
        raise BcjaxError(f"unknown flag {rest[0]}: see python scripts/sweep.py --help and python scripts/train.py --help")
    return fields


def parse_seeds(text: str) -> list[int]:
    """'1-5' -> 1..5; '1,3,7' and '1-3,7' too."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            a, _, b = part.strip().partition("-")
            seeds += list(range(int(a), int(b) + 1)) if b else [int(a)]
    except ValueError:
        raise BcjaxError(f"--seeds {text!r} is not a seed list: use e.g. 1-5 or 1,3,7") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise BcjaxError(f"--seeds {text!r} must list distinct seeds: use e.g. 1-5 or 1,3,7")
    return seeds


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    """['learning_rate=1e-3,5e-3', 'size=32,64'] -> {'learning_rate': [...], 'size': [...]}."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        name, eq, values = spec.partition("=")
        if not eq or not values.strip():
            raise BcjaxError(f"--grid {spec!r} is not NAME=V1,V2,...: e.g. --grid learning_rate=1e-3,5e-3")
        name = name.strip().lstrip("-")
        if name in grid:
            raise BcjaxError(f"--grid {name} is given twice: list all its values in one --grid")
        grid[name] = [v.strip() for v in values.split(",")]
    return grid


_DRAWS = {"uniform": lambda rng, lo, hi: f"{rng.uniform(lo, hi):.4g}",
          "loguniform": lambda rng, lo, hi: f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.4g}",
          "randint": lambda rng, lo, hi: str(int(rng.integers(int(lo), int(hi) + 1)))}  # A..B inclusive


def _sampler(spec: str):
    """NAME=uniform:A:B | loguniform:A:B | randint:A:B | choice:V1,V2,... -> (NAME, draw(rng) -> text)."""
    name, _, dist = spec.partition("=")
    kind, _, args = dist.partition(":")
    name = name.strip().lstrip("-")
    if kind == "choice" and args:
        return name, lambda rng, values=args.split(","): values[rng.integers(len(values))]
    try:
        lo, hi = (float(v) for v in args.split(":"))
    except ValueError:
        lo = hi = math.nan
    if kind in _DRAWS and (kind != "loguniform" or 0 < lo < hi) and lo <= hi:
        return name, lambda rng: _DRAWS[kind](rng, lo, hi)
    raise BcjaxError(f"--sample {spec!r} is not NAME=uniform:A:B, loguniform:A:B (0 < A < B), randint:A:B "
                     "or choice:V1,V2,...")


def settings_of(grid: dict[str, list[str]], samples: list[str] = (), num_samples: int = 1,
                search_seed: int = 0) -> list[dict[str, str]]:
    """Every grid point, each with `num_samples` random draws of the --sample flags (seeded: the same
    command gives the same settings)."""
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if not samples:
        return points
    samplers = [_sampler(s) for s in samples]
    if clash := set(grid) & {n for n, _ in samplers}:
        raise BcjaxError(f"--{clash.pop()} is both in --grid and --sample: sweep it one way")
    rng = np.random.default_rng(search_seed)
    return [{**p, **{n: draw(rng) for n, draw in samplers}} for p in points for _ in range(num_samples)]


def seed_chunks(seeds: list[int], per_trial: int) -> list[tuple[int, ...]]:
    """Runs of consecutive seeds (one trial trains seeds s..s+K-1 side by side), at most `per_trial` long."""
    runs = [[s for _, s in run] for _, run in itertools.groupby(enumerate(seeds), lambda i_s: i_s[1] - i_s[0])]
    return [tuple(run[i:i + per_trial]) for run in runs for i in range(0, len(run), per_trial)]


def auto_seeds_per_trial(n_seeds: int, n_groups: int, slots: int) -> int:
    """Spread seeds over trials only as far as there are free trial slots; the rest share a trial
    (vmapped seeds cost little more than one, while each trial pays Ray's, JAX's and compilation's start-up)."""
    return max(1, math.ceil(n_seeds / max(1, slots // max(1, n_groups))))


def _tag(setting: dict[str, str]) -> str:
    """A setting as part of a directory name: a path value by its file's stem."""
    parts = [f"{k}{Path(v).stem if '/' in v else v}" for k, v in setting.items()]
    return re.sub(r"[^\w.=+-]+", "-", "_".join(parts))


def _fill(fields: dict, env_name: str) -> dict:
    """{env_name} and {env_base} (the name without -vN) in text values: one command serves several tasks."""
    base = env_name.rsplit("-v", 1)[0]
    return {k: v.replace("{env_name}", env_name).replace("{env_base}", base) if isinstance(v, str) else v
            for k, v in fields.items()}


def build_trials(envs: list[str], algos: list[str], settings: list[dict[str, str]], seeds: list[int],
                 fixed: dict | None = None, exp_name: str = "sweep", n_iter: int | None = None,
                 seeds_per_trial: int | None = None) -> list[Trial]:
    """The trials of a grid, each a Config (so checked as train.py's flags are: BcjaxError on the first bad one).

    `fixed`: train.py fields for every trial; `n_iter` applies to DAgger trials only (BC runs one iteration).
    """
    if owned := [k for k in [*(fixed or {}), *(k for s in settings for k in s)] if k in OWNER]:
        raise BcjaxError(f"--{owned[0]} is set per trial by the sweep: use {OWNER[owned[0]]}")
    trials: list[Trial] = []
    seen: dict[str, int] = {}
    for env, algo, setting in itertools.product(envs, algos, settings):
        exp = f"{exp_name}_{_tag(setting)}" if setting else exp_name
        try:
            fields = {**_fill(fixed or {}, env), **{k: value_of(Config, k, v) for k, v in _fill(setting, env).items()}}
            for chunk in seed_chunks(seeds, seeds_per_trial or len(seeds)):
                cfg = Config(**{**fields, "env_name": env, "algo": algo, "seed": chunk[0], "num_seeds": len(chunk),
                                "exp_name": exp, "quiet": True, "n_iter": n_iter if algo == "dagger" else None})
                base = f"{exp}_{env}_{algo}_s{chunk[0]}" + (f"-{chunk[-1]}" if len(chunk) > 1 else "")
                n = seen[base] = seen.get(base, 0) + 1  # random search may draw one setting twice
                trials.append(Trial(base if n == 1 else f"{base}_{n}", dict(setting), cfg))
        except (ValueError, BcjaxError) as e:
            raise BcjaxError(f"{e} (setting {setting})" if setting else str(e)) from None
    if any(t.config.scalar_log_freq == -1 for t in trials):
        raise BcjaxError("a sweep reports the logged metrics: drop --scalar_log_freq -1")
    return trials


def sweep_trials(args: SweepArgs, fixed: dict, seeds_per_trial: int | None) -> list[Trial]:
    """The trials scripts/sweep.py's flags ask for (`fixed`: the train.py flags passed through)."""
    settings = settings_of(parse_grid(list(args.grid)), list(args.sample), args.num_samples, args.search_seed)
    return build_trials([e.strip() for e in args.env_name.split(",")], [a.strip() for a in args.algo.split(",")],
                        settings, parse_seeds(args.seeds), fixed, args.exp_name, args.n_iter, seeds_per_trial)
