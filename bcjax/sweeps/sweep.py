"""Sweeps: tasks × algorithms × settings × seeds as Ray Tune trials, and their summary.

A trial is one bcjax training run (`bcjax.cli.run`, in-process in a Ray worker) of one
setting on one task, with one or more consecutive seeds trained side by side
(`--num_seeds`); it reports every logged iteration to Tune (`tune.report`) and
writes its normal run directory under `<out>/runs/<trial>/`. Tune keeps its own
results, TensorBoard files and experiment state under `<out>/tune/`, which is what
lets an interrupted sweep resume without re-running finished trials. The summary
(`summary.md`, `.csv`, `.json` and `plots/`) is built from Tune's stored results.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bcjax.errors import BcjaxError
from bcjax.run.config import Config, build_parser, config_from_args, flag_options

EXTRA = "pip install -e '.[sweep]'"
# Flags a sweep sets per trial: they have sweep flags of their own (or are the sweep's business).
OWN_FLAGS = {"env_name": "--env_name A,B", "algo": "--algo bc,dagger", "do_dagger": "--algo dagger",
             "seed": "--seeds 1-5", "num_seeds": "--seeds 1-5", "logdir": "--out", "resume": "the same --out",
             "exp_name": "--exp_name", "n_iter": "--n_iter"}
PATH_FLAGS = ("--expert_policy_file", "-epf", "--expert_data", "-ed")
ROW_KEYS = ("run_dir", "wall_s")  # what a trial reports besides bcjax's metrics row


@dataclass(frozen=True)
class Trial:
    key: str  # unique and readable: the Tune trial's name and its run root <out>/runs/<key>
    env_name: str
    algo: str
    exp_name: str  # the group's name: trials of one setting on one task share it (their seeds are pooled)
    setting: dict[str, str]  # the swept flags' values
    seeds: tuple[int, ...]  # consecutive: trained side by side
    argv: tuple[str, ...]  # the train.py flags (without --logdir, which the trial sets)

    @property
    def group(self) -> tuple[str, str, str]:
        return self.env_name, self.algo, self.exp_name


@dataclass
class Outcome:
    """What became of one trial: its status, the error of a failed one, and its reported rows."""
    trial: Trial
    status: str  # finished, failed, stopped early (by the scheduler), unfinished (the sweep was interrupted first)
    error: str | None = None
    rows: list[dict] = field(default_factory=list)  # bcjax metrics rows (Iteration, metrics, per_seed)
    run_dir: str | None = None
    wall_s: float | None = None


def trial_resources(cpus: float = 1.0, gpus: float = 0.0) -> dict[str, float]:
    """What each trial asks Ray for (the one place trial resources are decided)."""
    return {"cpu": cpus, "gpu": gpus}


# ---------------------------------------------------------------- the grid


def _strict_parser() -> argparse.ArgumentParser:
    p = build_parser()

    def error(message: str) -> None:
        raise BcjaxError(message)

    p.error = error  # type: ignore[method-assign]
    return p


def train_config(argv: list[str]) -> Config:
    """train.py's configuration from flags; bad flags raise BcjaxError instead of exiting."""
    return config_from_args(_strict_parser().parse_args(argv))


def _switches() -> dict[str, bool]:
    """train.py's flag names -> whether each is an on/off switch."""
    return dict(flag_options().values())


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


def _flag_name(name: str, option: str) -> str:
    """A swept flag's name, checked against train.py's flags."""
    name = name.strip().lstrip("-")
    if name in OWN_FLAGS:
        raise BcjaxError(f"{option} cannot sweep {name}: use {OWN_FLAGS[name]}")
    if name not in _switches():
        raise BcjaxError(f"{option}: train.py has no flag --{name}: see python scripts/train.py --help")
    return name


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    """['learning_rate=1e-3,5e-3', 'size=32,64'] -> {'learning_rate': [...], 'size': [...]}."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        name, eq, values = spec.partition("=")
        if not eq or not values.strip():
            raise BcjaxError(f"--grid {spec!r} is not NAME=V1,V2,...: e.g. --grid learning_rate=1e-3,5e-3")
        name = _flag_name(name, f"--grid {spec}")
        if name in grid:
            raise BcjaxError(f"--grid {name} is given twice: list all its values in one --grid")
        grid[name] = [v.strip() for v in values.split(",")]
    return grid


def _sampler(spec: str):
    """NAME=uniform:A:B | loguniform:A:B | randint:A:B (A..B inclusive) | choice:V1,V2,..."""
    name, eq, dist = spec.partition("=")
    kind, _, args = dist.partition(":")
    name = _flag_name(name, f"--sample {spec}")
    try:
        if kind == "choice" and args:
            values = args.split(",")
            return name, lambda rng: values[rng.integers(len(values))]
        lo, hi = (float(v) for v in args.split(":"))
        if kind == "uniform":
            return name, lambda rng: f"{rng.uniform(lo, hi):.4g}"
        if kind == "loguniform" and 0 < lo < hi:
            return name, lambda rng: f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.4g}"
        if kind == "randint":
            return name, lambda rng: str(int(rng.integers(int(lo), int(hi) + 1)))
    except ValueError:
        pass
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
    clash = set(grid) & {n for n, _ in samplers}
    if clash:
        raise BcjaxError(f"--{clash.pop()} is both in --grid and --sample: sweep it one way")
    rng = np.random.default_rng(search_seed)
    return [{**p, **{n: draw(rng) for n, draw in samplers}} for p in points for _ in range(num_samples)]


def _setting_flags(setting: dict[str, str]) -> list[str]:
    switches, flags = _switches(), []
    for name, value in setting.items():
        if switches[name]:
            if value.lower() not in ("true", "false"):
                raise BcjaxError(f"--{name} is on or off: sweep it as {name}=true,false, got {value!r}")
            flags += [f"--{name}"] if value.lower() == "true" else []
        else:
            flags += [f"--{name}", value]
    return flags


def _fill(tokens: list[str], env_name: str) -> list[str]:
    """{env_name} and {env_base} (the name without -vN) in flag values, and paths made absolute
    (trials run in Tune's own working directory)."""
    base = env_name.rsplit("-v", 1)[0]
    out = [t.replace("{env_name}", env_name).replace("{env_base}", base) for t in tokens]
    for i, t in enumerate(out[:-1]):
        if t in PATH_FLAGS and "://" not in out[i + 1]:
            out[i + 1] = os.path.abspath(os.path.expanduser(out[i + 1]))
    return out


def seed_chunks(seeds: list[int], per_trial: int) -> list[tuple[int, ...]]:
    """Runs of consecutive seeds (one trial trains seeds s..s+K-1 side by side), at most `per_trial` long."""
    runs: list[list[int]] = []
    for s in seeds:
        if runs and s == runs[-1][-1] + 1 and len(runs[-1]) < per_trial:
            runs[-1].append(s)
        else:
            runs.append([s])
    return [tuple(r) for r in runs]


def auto_seeds_per_trial(n_seeds: int, n_groups: int, slots: int) -> int:
    """Spread seeds over trials only as far as there are free trial slots; the rest share a trial
    (vmapped seeds cost little more than one, while each trial pays Ray's, JAX's and compilation's start-up)."""
    return max(1, math.ceil(n_seeds / max(1, slots // max(1, n_groups))))


def _tag(setting: dict[str, str]) -> str:
    """A setting as part of a directory name: a path value by its file's stem."""
    parts = [f"{k}{Path(v).stem if '/' in v else v}" for k, v in setting.items()]
    return re.sub(r"[^\w.=+-]+", "-", "_".join(parts))


def build_trials(envs: list[str], algos: list[str], settings: list[dict[str, str]], seeds: list[int],
                 fixed: list[str] = (), exp_name: str = "sweep", n_iter: int | None = None,
                 seeds_per_trial: int | None = None) -> list[Trial]:
    """The trials of a grid, each checked by train.py's own flag checks (BcjaxError on the first bad one).

    `fixed` are train.py flags for every trial; `n_iter` applies to DAgger trials only (BC runs one iteration).
    """
    for algo in algos:
        if algo not in ("bc", "dagger"):
            raise BcjaxError(f"--algo {algo!r}: use bc, dagger or bc,dagger")
    groups = len(envs) * len(algos) * len(settings)
    chunks = seed_chunks(seeds, seeds_per_trial or len(seeds))
    trials, keys = [], set()
    for env, algo, setting in itertools.product(envs, algos, settings):
        exp = f"{exp_name}_{_tag(setting)}" if setting else exp_name
        for chunk in chunks:
            argv = ["--env_name", env, "--algo", algo, "--seed", str(chunk[0]), "--num_seeds", str(len(chunk)),
                    "--exp_name", exp, "--quiet", *(["--n_iter", str(n_iter)] if algo == "dagger" and n_iter else []),
                    *_fill(list(fixed), env), *_fill(_setting_flags(setting), env)]
            seed_part = f"s{chunk[0]}" + (f"-{chunk[-1]}" if len(chunk) > 1 else "")
            key = base = f"{exp}_{env}_{algo}_{seed_part}"
            n = 1
            while key in keys:  # random search may draw one setting twice
                n += 1
                key = f"{base}_{n}"
            keys.add(key)
            try:
                cfg = train_config(argv)
            except BcjaxError as e:
                where = f" (setting {setting})" if setting else ""
                raise BcjaxError(f"{e}{where}") from None
            if cfg.scalar_log_freq == -1:
                raise BcjaxError("a sweep reports the logged metrics: drop --scalar_log_freq -1")
            trials.append(Trial(key, env, algo, exp, dict(setting), chunk, tuple(argv)))
    assert len(trials) == groups * len(chunks)
    return trials


# ---------------------------------------------------------------- running on Ray


def require_ray():
    try:
        import ray
        from ray import tune
    except ImportError as e:
        raise BcjaxError(f"sweeps need Ray Tune ({e}): {EXTRA}") from None
    return ray, tune


def start_ray(address: str | None, num_cpus: int | None = None) -> None:
    """An embedded Ray on this machine's cores, or the cluster at `address` (auto, ray://HOST:10001)."""
    ray, _ = require_ray()
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a sweep unless asked for
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    # The workers import the same bcjax as this process (also when it runs from a clone without installing).
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": {"PYTHONPATH": path}})


def trial_slots(cpus_per_trial: float) -> int:
    ray, _ = require_ray()
    return max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_trial))


def _remove_partial_runs(logdir: Path) -> None:
    # A trial that starts again (a resumed sweep, a retried failure) starts from nothing: the
    # run directories of its unfinished attempt go (the expert-data cache stays).
    for d in logdir.glob("q[12]_*"):
        shutil.rmtree(d, ignore_errors=True)


def run_trial(config: dict) -> None:
    """Tune's trainable: one bcjax run, every logged iteration reported with tune.report."""
    from ray import tune

    from bcjax.run.main import run

    start = time.time()
    # Trials may share a GPU (fractional --gpus_per_trial): no trial takes all its memory up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    trial = config["trial"]
    logdir = Path(config["out"]) / "runs" / trial["key"]
    _remove_partial_runs(logdir)
    cfg = train_config([*trial["argv"], "--logdir", str(logdir)])

    def report(row: dict, run_dir: Path) -> None:
        tune.report({**row, "run_dir": str(run_dir), "wall_s": time.time() - start})

    run(cfg, on_row=report, limit_threads=True)  # a trial owns its Ray worker process, as train.py owns its own


@dataclass
class SweepOptions:
    out: Path
    address: str | None = None
    num_cpus: int | None = None  # the embedded Ray's CPUs (default: all cores)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    scheduler: str | None = None  # None or "asha"
    metric: str = "Eval_AverageReturn"
    mode: str = "max"
    grace_period: int = 1
    verbose: int = 1


def _definition(trials: list[Trial]) -> list[dict]:
    return [{"key": t.key, "argv": list(t.argv)} for t in trials]


def _scheduler(opts: SweepOptions, trials: list[Trial]):
    if opts.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    max_t = max(train_config(list(t.argv)).n_iter for t in trials)
    return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=opts.grace_period,
                         reduction_factor=2)


def run_sweep(trials: list[Trial], opts: SweepOptions) -> list[Outcome]:
    """Run the trials on Ray Tune (resuming the sweep in `opts.out` if it holds this one) and
    return every trial's outcome; a failed trial is an outcome, not an exception."""
    _, tune = require_ray()
    out = opts.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    state = out / "sweep.json"
    exp_dir = out / "tune"
    definition = _definition(trials)
    if state.is_file() and json.loads(state.read_text())["trials"] != definition:
        raise BcjaxError(f"{out} holds a different sweep: pass a new --out (or the same flags as before to resume it)")
    state.write_text(json.dumps({"trials": definition, "trial_specs": [asdict(t) for t in trials]}, indent=1) + "\n")
    start_ray(opts.address, opts.num_cpus)

    trainable = tune.with_resources(run_trial, trial_resources(opts.cpus_per_trial, opts.gpus_per_trial))
    if tune.Tuner.can_restore(str(exp_dir)):
        print(f"resuming the sweep in {out}: finished trials are kept, the others run (delete {out} to start over)")
        tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_unfinished=True, restart_errored=True)
    else:
        def name(t) -> str:
            return t.config["trial"]["key"]

        scheduler = _scheduler(opts, trials)
        tuner = tune.Tuner(
            trainable,
            param_space={"out": str(out), "trial": tune.grid_search([asdict(t) for t in trials])},
            tune_config=tune.TuneConfig(scheduler=scheduler, metric=opts.metric if scheduler else None,
                                        mode=opts.mode if scheduler else None, max_concurrent_trials=opts.max_concurrent,
                                        trial_name_creator=name, trial_dirname_creator=name),
            run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=opts.verbose),
        )
    grid = tuner.fit()
    statuses = {t.config["trial"]["key"]: t.status for t in tune.ExperimentAnalysis(str(exp_dir)).trials}
    by_key = {t.key: t for t in trials}
    outcomes = {}
    for result in grid:
        trial = by_key[result.config["trial"]["key"]]
        outcomes[trial.key] = _outcome(trial, result, statuses.get(trial.key))
    return [outcomes.get(t.key, Outcome(t, "unfinished")) for t in trials]


def _one_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error  # Ray wraps the trial's exception
    text = str(cause).strip().splitlines()
    return (text[-1] if text else "") if isinstance(cause, BcjaxError) else f"{type(cause).__name__}: {' '.join(text)}"


def _outcome(trial: Trial, result, tune_status: str | None) -> Outcome:
    """The trial's bcjax rows as it reported them (from Tune's result.json) and what became of it."""
    reported = []
    result_file = Path(result.path) / "result.json"
    if result_file.is_file():
        reported = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        # A trial run again (a resumed sweep retries failed and unfinished ones) appends from iteration 0.
        starts = [i for i, r in enumerate(reported) if i == 0 or r.get("Iteration", 0) <= reported[i - 1].get("Iteration", 0)]
        reported = reported[starts[-1]:] if starts else reported
    rows = [{k: v for k, v in r.items() if k in ("Iteration", "per_seed") or k in r.get("per_seed", {})}
            for r in reported]
    last = reported[-1] if reported else {}
    if result.error is not None or tune_status == "ERROR":
        status = "failed"
    elif tune_status == "TERMINATED":
        status = "finished" if _reached_end(trial, rows) else "stopped early"
    else:
        status = "unfinished"
    error = _one_line(result.error) if result.error is not None else None
    return Outcome(trial, status, error, rows, last.get("run_dir"), last.get("wall_s"))


def _reached_end(trial: Trial, rows: list[dict]) -> bool:
    cfg = train_config(list(trial.argv))
    last_logged = max(i for i in range(cfg.n_iter) if i % cfg.scalar_log_freq == 0)
    return bool(rows) and rows[-1]["Iteration"] == last_logged


# ---------------------------------------------------------------- the summary


def final_values(outcomes: list[Outcome], metric: str) -> list[float]:
    """The group's per-seed values of `metric` at each trial's last logged iteration."""
    return [float(v) for o in outcomes if o.rows for v in o.rows[-1]["per_seed"][metric]]


def summarize_groups(outcomes: list[Outcome], metric: str = "Eval_AverageReturn") -> list[dict]:
    """One entry per task × algorithm × setting: the statistics over its seeds (those of trials that ran)."""
    from bcjax.run.stats import summarize

    groups: dict[tuple[str, str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.trial.group, []).append(o)
    summary = []
    for (env, algo, exp), members in groups.items():
        ran = [o for o in members if o.rows]
        entry = {"env_name": env, "algo": algo, "exp_name": exp, "setting": members[0].trial.setting,
                 "trials": len(members), "failed": sum(o.status == "failed" for o in members),
                 "stopped_early": sum(o.status == "stopped early" for o in members),
                 "wall_s": round(sum(o.wall_s or 0.0 for o in members), 1)}
        values = final_values(ran, metric)
        if values:
            entry.update(summarize(values))
            entry["iterations"] = max(o.rows[-1]["Iteration"] for o in ran) + 1
            expert = ran[0].rows[0].get("Initial_DataCollection_AverageReturn")
            entry["expert"] = expert
            if expert and metric.endswith("AverageReturn"):
                entry["pct_expert"] = 100 * entry["mean"] / expert
        summary.append(entry)
    return summary


def _setting_text(setting: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "-"


COLUMNS = ("task", "algo", "setting", "seeds", "expert", "mean ± std", "IQM [95% CI]", "% of expert", "iterations",
           "trial time")


def _cells(g: dict) -> list[str]:
    if "n" not in g:
        return [g["env_name"], g["algo"], _setting_text(g["setting"]), "0", "", "", "", "", "", f"{g['wall_s']:.0f} s"]
    pct = f"{g['pct_expert']:.0f}%" if "pct_expert" in g else ""
    return [g["env_name"], g["algo"], _setting_text(g["setting"]), str(g["n"]),
            f"{g['expert']:.0f}" if g.get("expert") is not None else "", f"{g['mean']:.1f} ± {g['std']:.1f}",
            f"{g['iqm']:.1f} [{g['iqm_ci_low']:.1f}, {g['iqm_ci_high']:.1f}]", pct, str(g["iterations"]),
            f"{g['wall_s']:.0f} s"]


def render_summary(summary: list[dict], outcomes: list[Outcome], metric: str) -> str:
    lines = [f"# Sweep summary: {metric} at the final iteration", "",
             "Over seeds: mean ± std, interquartile mean with a 95% bootstrap interval (rliable); "
             "trial time is the trials' wall time, added up.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(g)) + " |" for g in summary]
    bad = [o for o in outcomes if o.status != "finished"]
    if bad:
        lines += ["", "## Trials that did not finish", ""]
        lines += [f"- `{o.trial.key}`: {o.status}" + (f": {o.error}" if o.error else "") for o in bad]
    return "\n".join(lines) + "\n"


def _runs_for_plots(outcomes: list[Outcome]) -> list:
    from bcjax.run.plots import Run

    return [Run(Path(o.run_dir or o.trial.key), {**train_config(list(o.trial.argv)).__dict__}, o.rows)
            for o in outcomes if o.rows]


def make_plots(outcomes: list[Outcome], summary: list[dict], out: Path, metric: str) -> list[Path]:
    """Learning curves, the final metric vs each swept numeric setting, and a performance profile across tasks."""
    from bcjax.run.plots import plot_hparam, plot_learning_curves

    runs = _runs_for_plots(outcomes)
    if not runs:
        return []
    plots = out / "plots"
    paths = [plot_learning_curves(runs, plots / "learning_curves.png", metric)]
    swept = list(dict.fromkeys(k for o in outcomes for k in o.trial.setting))
    for name in swept:
        numeric = [r for r in runs if isinstance(r.config.get(name), (int, float)) and not isinstance(r.config[name], bool)]
        if len(numeric) == len(runs):
            others = [s for s in swept if s != name]
            paths.append(plot_hparam(runs, name, plots / f"{name}.png", metric, split_by=others or None))
    if metric.endswith("AverageReturn"):
        profile = plot_performance_profile(summary, outcomes, plots / "performance_profile.png", metric)
        paths += [profile] if profile else []
    return paths


def plot_performance_profile(summary: list[dict], outcomes: list[Outcome], path: Path, metric: str) -> Path | None:
    """Fraction of runs above each fraction of the expert's return, per algorithm × setting across tasks
    (rliable's score distribution with a stratified-bootstrap band); methods need seeds on every task."""
    from matplotlib.figure import Figure

    from bcjax.run.stats import performance_profiles

    experts = {(g["env_name"], g["algo"], g["exp_name"]): g.get("expert") for g in summary}
    methods: dict[str, dict[str, list[float]]] = {}
    for o in outcomes:
        expert = experts.get(o.trial.group)
        if not o.rows or not expert:
            continue
        label = f"{'DAgger' if o.trial.algo == 'dagger' else 'BC'} {_setting_text(o.trial.setting)}".replace(" -", "")
        methods.setdefault(label, {}).setdefault(o.trial.env_name, []).extend(
            v / expert for v in o.rows[-1]["per_seed"][metric])
    tasks = sorted({t for m in methods.values() for t in m})
    scores = {}
    for label, per_task in methods.items():
        n = min(len(v) for v in per_task.values())
        if set(per_task) == set(tasks) and n > 0:
            scores[label] = np.array([per_task[t][:n] for t in tasks]).T  # runs × tasks
    if not scores:
        return None
    top = max(1.2, max(float(s.max()) for s in scores.values()) * 1.05)
    taus = np.linspace(min(0.0, min(float(s.min()) for s in scores.values())), top, 61)
    profiles, cis = performance_profiles(scores, taus)
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for label in scores:
        ax.plot(taus, profiles[label], label=label)
        ax.fill_between(taus, cis[label][0], cis[label][1], alpha=0.2)
    ax.set_xlabel(f"{metric} / expert's (fraction of the expert data's return)")
    ax.set_ylabel(f"fraction of runs above (across {len(tasks)} task{'s' * (len(tasks) > 1)})")
    ax.set_title("Performance profile")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


REPO = Path(__file__).resolve().parent.parent


def repo_relative(token: str) -> str:
    """A path in a command or a summary, relative to the repository (as a user types it from a clone):
    what a run leaves behind names no directory of the machine that made it."""
    return os.path.relpath(token, REPO) if os.path.isabs(token) else token


def write_summary(outcomes: list[Outcome], out: Path, metric: str = "Eval_AverageReturn",
                  summary: list[dict] | None = None) -> list[dict]:
    """summary.md, summary.csv, summary.json and plots/ in `out` (from `summary` if already computed);
    returns the per-group summary."""
    summary = summarize_groups(outcomes, metric) if summary is None else summary
    (out / "summary.md").write_text(render_summary(summary, outcomes, metric))
    with (out / "summary.csv").open("w", newline="") as f:
        keys = ["env_name", "algo", "exp_name", "setting", "n", "expert", "mean", "std", "iqm", "iqm_ci_low",
                "iqm_ci_high", "pct_expert", "iterations", "wall_s", "trials", "failed", "stopped_early"]
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        for g in summary:
            w.writerow({**g, "setting": _setting_text(g["setting"])})
    trials = [{"key": o.trial.key, "env_name": o.trial.env_name, "algo": o.trial.algo, "setting": o.trial.setting,
               "seeds": list(o.trial.seeds), "status": o.status, "error": o.error,
               "run_dir": o.run_dir and repo_relative(o.run_dir),
               "wall_s": o.wall_s, "train_flags": [repo_relative(t) for t in o.trial.argv]} for o in outcomes]
    (out / "summary.json").write_text(json.dumps({"metric": metric, "groups": summary, "trials": trials}, indent=1) + "\n")
    make_plots(outcomes, summary, out, metric)
    return summary


# ---------------------------------------------------------------- scripts/sweep.py


def build_sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sweep.py", allow_abbrev=False,
        description="Run a grid (or random search) of bcjax runs as Ray Tune trials: tasks x algorithms x "
                    "settings x seeds. Every other flag goes to train.py for every trial.")
    a = p.add_argument
    a("--env_name", "-env", default=None, help="comma-separated tasks (default: train.py's default task)")
    a("--algo", default="bc", help="bc, dagger or bc,dagger (default bc)")
    a("--seeds", default="1", help="seeds: 1-5, 1,3,7 (default 1)")
    a("--n_iter", "-n", type=int, default=None, help="DAgger iterations (BC trials run one)")
    a("--exp_name", default="sweep", help="prefix of the trials' names (default sweep)")
    a("--grid", action="append", default=[], metavar="NAME=V1,V2",
      help="a train.py flag and its values; repeat for a grid over several flags")
    a("--sample", action="append", default=[], metavar="NAME=DIST",
      help="random search: uniform:A:B, loguniform:A:B, randint:A:B or choice:V1,V2 (with --num_samples)")
    a("--num_samples", type=int, default=1, help="random draws of the --sample flags per grid point")
    a("--search_seed", type=int, default=0, help="seed of the random search's draws")
    a("--seeds_per_trial", type=int, default=None,
      help="seeds trained side by side in one trial (default: spread over free trial slots, the rest vmapped)")
    a("--out", required=True, help="the sweep's folder: run directories, Tune's results, the summary")
    a("--address", default=None, help="an existing Ray cluster: auto, or ray://HOST:10001 (default: an embedded Ray)")
    a("--num_cpus", type=int, default=None, help="CPUs of the embedded Ray (default: all cores)")
    a("--cpus_per_trial", type=float, default=1.0, help="CPUs Ray reserves for each trial (default 1)")
    a("--gpus_per_trial", type=float, default=0.0, help="GPUs (or a fraction) Ray reserves for each trial (default 0)")
    a("--max_concurrent", type=int, default=None, help="at most this many trials at once")
    a("--scheduler", choices=["asha"], default=None, help="asha: stop bad settings early on --metric")
    a("--metric", default="Eval_AverageReturn", help="the metric the summary and the scheduler use")
    a("--mode", choices=["max", "min"], default="max")
    a("--grace_period", type=int, default=1, help="asha: iterations every trial runs before it may be stopped")
    return p


def _check_passthrough(flags: list[str]) -> None:
    """The flags for train.py: known to it, and none that the sweep sets per trial."""
    for token in flags:
        name = token.split("=", 1)[0]
        if not name.startswith("-") or name.lstrip("-").replace(".", "").isdigit():
            continue
        dest = flag_options().get(name, (None,))[0]
        if dest is None:
            raise BcjaxError(f"unknown flag {name}: see python scripts/sweep.py --help and python scripts/train.py --help")
        if dest in OWN_FLAGS:
            raise BcjaxError(f"{name} is set per trial by the sweep: use {OWN_FLAGS[dest]}")


def main(argv: list[str] | None = None) -> int:
    from bcjax.errors import run_script

    def body() -> int:
        args, passthrough = build_sweep_parser().parse_known_args(argv)
        _check_passthrough(passthrough)
        if args.num_samples < 1 or args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
            raise BcjaxError("--num_samples and --cpus_per_trial must be positive, --gpus_per_trial 0 or more")
        if args.metric not in _metric_names():
            raise BcjaxError(f"--metric {args.metric!r} is not a logged metric: one of {', '.join(_metric_names())}")
        envs = [e.strip() for e in (args.env_name or Config.env_name).split(",")]
        algos = [a.strip() for a in args.algo.split(",")]
        seeds = parse_seeds(args.seeds)
        settings = settings_of(parse_grid(args.grid), args.sample, args.num_samples, args.search_seed)
        # Every trial's flags are checked before Ray starts; the packing of seeds only changes how they share trials.
        build_trials(envs, algos, settings, seeds, passthrough, args.exp_name, args.n_iter, 1)
        require_ray()
        from bcjax.run.stats import _rliable

        _rliable()
        opts = SweepOptions(Path(args.out), args.address, args.num_cpus, args.cpus_per_trial, args.gpus_per_trial,
                            args.max_concurrent, args.scheduler, args.metric, args.mode, args.grace_period)
        per_trial = args.seeds_per_trial
        state = Path(args.out) / "sweep.json"
        if per_trial is None and state.is_file():  # resuming: keep the packing the sweep started with
            per_trial = max(len(t["seeds"]) for t in json.loads(state.read_text())["trial_specs"])
        if per_trial is None:
            start_ray(args.address, args.num_cpus)
            n_groups = len(envs) * len(algos) * len(settings)
            per_trial = auto_seeds_per_trial(len(seeds), n_groups, trial_slots(args.cpus_per_trial))
        trials = build_trials(envs, algos, settings, seeds, passthrough, args.exp_name, args.n_iter, per_trial)
        print(f"sweep: {len(trials)} trial(s), {len(seeds)} seed(s) per setting, up to {per_trial} per trial")
        outcomes = run_sweep(trials, opts)
        write_summary(outcomes, opts.out.resolve(), args.metric)
        print((opts.out / "summary.md").read_text())
        print(f"summary: {opts.out / 'summary.md'} (.csv, .json), plots in {opts.out / 'plots'}")
        if any(o.status == "unfinished" for o in outcomes):
            print(f"interrupted: run the same command again to finish the sweep in {opts.out}")
            return 130
        return 1 if any(o.status == "failed" for o in outcomes) else 0

    return run_script(body, "interrupted: run the same command again to resume the sweep")


def _metric_names() -> tuple[str, ...]:
    from bcjax.run.logger import METRICS

    return METRICS
