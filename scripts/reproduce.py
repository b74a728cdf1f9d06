#!/usr/bin/env python
"""Reproduce the CS285 homework 1 results with bcjax (docs/RESULTS.md), as one sweep on Ray Tune.

Runs, with the CS285 sample experts and data and the homework defaults
(eval_batch_size 5000), K seeds per run trained side by side (--num_seeds):
  1. BC on Ant-v4, HalfCheetah-v4, Hopper-v4;
  2. a BC study on Ant-v4: return vs training steps;
  3. DAgger, 10 iterations, on each task;
  4. DAgger with the expert mixed in (--beta_schedule linear) on Hopper-v4 and Ant-v4;
  5. BC with --normalize_obs on each task;
  6. BC on Ant-v4 vs the number of expert trajectories (1 to 24, collected from the
     bundled expert with scripts/collect_expert_data.py).
`--only bcstudy` is a study of its own (docs/BC_STUDY.md, issue 23): what makes BC from the homework's two
trajectories reliable, 20 seeds per recipe on each task, one sweep per task (Hopper first); it rewrites the
page's tables, docs/bc_study.json and docs/bc_study.png after each task.
Each run is one trial of one sweep (bcjax.sweeps.sweep): an embedded Ray runs as many at
once as the machine has cores (--address: an existing Ray cluster). Writes
docs/results.json (every number with its run directory, command and wall time),
docs/results_tables.md and the PNG figures; the sweep's own summary (summary.md,
plots/, with a performance profile across tasks) goes under --runs, where an
interrupted run of this script resumes.

    python scripts/reproduce.py            # everything
    python scripts/reproduce.py --quick    # a smoke test with tiny settings
    python scripts/reproduce.py --only bcstudy   # docs/BC_STUDY.md (--redraw: its tables and figure from bc_study.json)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bcjax.data.bundled import bundled_expert_path  # noqa: E402
from bcjax.errors import BcjaxError  # noqa: E402
from bcjax.run.config import RECIPES, config_argv  # noqa: E402
from bcjax.run.flags import flag, parse  # noqa: E402
from bcjax.sweeps.runner import Outcome, run_sweep  # noqa: E402
from bcjax.sweeps.summary import repo_relative, write_summary  # noqa: E402
from bcjax.sweeps.trials import SweepArgs, Trial, build_trials  # noqa: E402

TASKS = {"Ant-v4": "Ant", "HalfCheetah-v4": "HalfCheetah", "Hopper-v4": "Hopper"}
STUDY_TASK = "Ant-v4"
STUDY_STEPS = (100, 300, 1000, 3000, 10000)
BETA_TASKS = ("Hopper-v4", "Ant-v4")
BETA_ITERS = 5  # beta falls 1, 0.8, ..., 0 over the first half of the 10 iterations
DATA_TASK = "Ant-v4"  # the data study uses the bundled expert, which can give any number of trajectories
DATA_TRAJECTORIES = (1, 2, 4, 8, 16, 24)
DATA_SEED = 1000  # collection seed: the study's expert episodes are not the training runs' evaluation episodes
# --only bcstudy: each candidate alone, then the combinations the single results suggested (docs/BC_STUDY.md)
BCSTUDY_TASKS = ("Hopper-v4", "Ant-v4", "HalfCheetah-v4")
BCSTUDY_SEEDS = 20
_NORM = {"normalize_obs": True}
_N5C = {**_NORM, "num_agent_train_steps_per_iter": 5000, "lr_schedule": "cosine"}
_ROBUST = {**_N5C, "num_agent_train_steps_per_iter": 20000}
BCSTUDY_ROWS = {
    "homework defaults": {}, "--normalize_obs": _NORM,
    "5k updates": {"num_agent_train_steps_per_iter": 5000}, "20k updates": {"num_agent_train_steps_per_iter": 20000},
    "AdamW, weight decay 0.1": {"weight_decay": 0.1}, "cosine step size": {"lr_schedule": "cosine"},
    "width 256 (-s 256)": {"size": 256}, "depth 3 (-l 3)": {"n_layers": 3}, "ensemble of 5": {"ensemble": 5},
    "mean action at evaluation": {"deterministic_eval": True},
    "normalize + 5k": {**_NORM, "num_agent_train_steps_per_iter": 5000},
    "normalize + 20k": {**_NORM, "num_agent_train_steps_per_iter": 20000},
    "normalize + 5k + cosine": _N5C,
    "normalize + 20k + cosine = --recipe robust": _ROBUST,
    "normalize + 5k + cosine + AdamW 0.1": {**_N5C, "weight_decay": 0.1},
    "normalize + 5k + cosine + ensemble of 5": {**_N5C, "ensemble": 5},
    "normalize + 5k + cosine + mean action": {**_N5C, "deterministic_eval": True},
}
assert RECIPES["robust"] == _ROBUST, "--recipe robust is the study's row of that name"
DART_NOISE = (0.1, 0.3)  # std of the action noise the expert collects with (its actions are O(1))


@dataclass(frozen=True)
class ReproduceArgs:
    """Reproduce the CS285 homework 1 results with bcjax (docs/RESULTS.md), as one sweep on Ray Tune."""

    PROG: ClassVar[str] = "reproduce.py"
    shared: str = flag(str(REPO.parent / "shared" / "cs285"), "folder with experts/ and expert_data/")
    runs: str | None = flag(None, "the sweep's folder: run directories and Tune's results; unset: runs/reproduce, "
                                  "runs/reproduce_quick with --quick; a rerun resumes what is there")
    out: str = flag(str(REPO / "docs"), "where results.json, tables and PNGs go")
    seeds: int = flag(5, "seeds per run (trained side by side)")
    eval_batch_size: int = flag(5000, "env steps of evaluation per iteration")
    quick: bool = flag(False, "tiny settings, to check the script end to end (2 seeds, --eval_batch_size 300)")
    redraw: bool = flag(False, "only redo tables and figures from OUT/results.json")
    address: str | None = flag(None, "an existing Ray cluster (auto, ray://HOST:10001); unset: an embedded Ray")
    only: str | None = flag(None, "run only these tables' runs (comma-separated, of bc, dagger, beta, normalize, "
                                  "study, data) and report their wall time; writes no results page (unset --runs: "
                                  "runs/reproduce_only_TABLES); bcstudy: the BC study alone, docs/BC_STUDY.md",
                            metavar="TABLES")
    max_concurrent: int | None = flag(None, "at most this many runs at once (1: one at a time)")


def plan(args: ReproduceArgs, data_file: Path) -> dict[tuple[str, str], Trial]:
    """The sweep: (table, row name) -> its trial (all seeds of a run in one trial, as train.py --num_seeds)."""
    shared = Path(args.shared)
    cs285 = {"expert_policy_file": str(shared / "experts" / "{env_base}.pkl"),
             "expert_data": str(shared / "expert_data" / "expert_data_{env_name}.pkl")}
    common = {"eval_batch_size": args.eval_batch_size, "video_log_freq": -1,
              **({"num_agent_train_steps_per_iter": 50} if args.quick else {})}
    seeds = list(range(1, args.seeds + 1))
    n_iter = 3 if args.quick else 10

    def trial(task: str, algo: str, exp: str, files: dict = cs285, **fields: object) -> Trial:
        (t,) = build_trials([task], [algo], [{}], seeds, {**files, **common, **fields}, exp, n_iter)
        return t

    runs = {}
    for task in TASKS:
        runs["bc", task] = trial(task, "bc", "bc")
        runs["dagger", task] = trial(task, "dagger", "dagger")
        runs["normalize", task] = trial(task, "bc", "bcnorm", normalize_obs=True)
    for task in BETA_TASKS:
        runs["beta", task] = trial(task, "dagger", "daggerbeta", beta_schedule="linear", beta_iters=BETA_ITERS)
    for n in (10, 50) if args.quick else STUDY_STEPS:
        # The homework samples actions at evaluation; the mean action shows how much of the
        # shortfall after few steps is the still-wide learned std rather than a wrong mean.
        runs["study", f"{n}"] = trial(STUDY_TASK, "bc", f"bcsteps{n}", num_agent_train_steps_per_iter=n)
        runs["study", f"{n}, mean action"] = trial(STUDY_TASK, "bc", f"bcsteps{n}mean",
                                                   num_agent_train_steps_per_iter=n, deterministic_eval=True)
    bundled = {"expert_policy_file": str(bundled_expert_path(DATA_TASK)), "expert_data": str(data_file)}
    for n in data_counts(args):
        runs["data", f"{n}"] = trial(DATA_TASK, "bc", f"bcdata{n}", bundled, expert_data_trajectories=n)
    return runs


def data_counts(args: ReproduceArgs) -> tuple[int, ...]:
    return (1, 2) if args.quick else DATA_TRAJECTORIES


def collect_data(args: ReproduceArgs, runs_dir: Path) -> Path:
    """The data study's expert trajectories (the bundled expert), collected once; each run takes the first N."""
    n = max(data_counts(args))
    data = runs_dir / "expert_data" / f"expert_data_{DATA_TASK}_bundled_n{n}_s{DATA_SEED}.pkl"
    return collect(data, "--env_name", DATA_TASK, "--n_traj", str(n), "--seed", str(DATA_SEED))


def collect(data: Path, *flags: str) -> Path:
    """scripts/collect_expert_data.py with `flags`, once: an existing `data` is kept."""
    if not data.is_file():
        cmd = [sys.executable, str(REPO / "scripts" / "collect_expert_data.py"), *flags, "--output", str(data)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"error: {' '.join(cmd)} failed:\n{proc.stderr.strip()}")
        print(proc.stdout.strip().splitlines()[0], flush=True)
    return data


def record(outcome: Outcome, summary: dict) -> dict:
    """One run's entry in results.json."""
    run_dir = Path(outcome.run_dir)
    argv = config_argv(outcome.trial.config.replace(logdir=str(run_dir.parent)))
    return {"run_dir": repo_relative(str(run_dir)), "wall_s": round(outcome.wall_s, 1),
            "command": " ".join(["scripts/train.py", *map(repo_relative, argv)]), "rows": outcome.rows,
            "summary": {k: summary[k] for k in ("n", "mean", "std", "iqm", "iqm_ci_low", "iqm_ci_high")}}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main() -> None:
    args = parse(ReproduceArgs)
    out = Path(args.out)
    if args.only == "bcstudy":  # a study of its own, with its own page
        return bc_study(replace(args, eval_batch_size=300) if args.quick else args, out)
    if args.redraw:
        results = json.loads((out / "results.json").read_text())
        (out / "results_tables.md").write_text(render_tables(results))
        make_figures(results, out)
        return
    if not (Path(args.shared) / "experts").is_dir():
        sys.exit(f"error: no CS285 files in {args.shared}: pass --shared DIR holding experts/ and expert_data/")
    if args.quick:
        args = replace(args, seeds=2, eval_batch_size=300)
    default = "reproduce_quick" if args.quick else "reproduce"
    if args.only:  # a sweep of fewer trials: a sweep's folder only grows, so it gets its own folder
        default += "_only_" + args.only.replace(",", "_")
    runs_dir = Path(args.runs or REPO / "runs" / default)
    out.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.time()
        runs = plan(args, collect_data(args, runs_dir))
        if args.only:
            kinds = args.only.split(",")
            if unknown := sorted(set(kinds) - {kind for kind, _ in runs}):
                sys.exit(f"error: --only {unknown[0]}: pick from bc, dagger, beta, normalize, study, data")
            runs = {key: t for key, t in runs.items() if key[0] in kinds}
        outcomes = run_sweep(list(runs.values()), SweepArgs(out=str(runs_dir), address=args.address,
                                                            max_concurrent=args.max_concurrent, verbose=0))
        total_wall = time.time() - t0
        print(f"{len(runs)} runs in {total_wall:.0f} s (sum of the runs' own wall times: "
              f"{sum(o.wall_s for o in outcomes):.0f} s)", flush=True)
        failed = [o for o in outcomes if o.status != "finished"]
        if failed:
            sys.exit("error: " + "; ".join(f"{o.trial.key} {o.status}: {o.error or ''}" for o in failed))
        if args.only:
            return
        summary = write_summary(outcomes, runs_dir.resolve())
    except BcjaxError as e:
        sys.exit(f"error: {e}")
    by_group = {(g["env_name"], g["algo"], g["exp_name"]): g for g in summary}
    by_key = {o.trial.key: o for o in outcomes}
    results: dict = {"machine": machine(), "seeds": args.seeds, "eval_batch_size": args.eval_batch_size,
                     **{kind: {} for kind, _ in runs}}
    for (kind, name), trial in runs.items():
        results[kind][name] = record(by_key[trial.key], by_group[trial.group])
    results["total_wall_s"] = round(total_wall, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    tables = render_tables(results)
    (out / "results_tables.md").write_text(tables)
    print(tables)
    make_figures(results, out)


def expert_return(run: dict) -> float:
    return run["rows"][0]["Initial_DataCollection_AverageReturn"]


def _table(title: str, first: str, runs: dict[str, dict]) -> list[str]:
    head = [first, "expert", "return (mean ± std)", "IQM [95% CI]", "% of expert", "iterations", "wall time",
            "run directory"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, run in runs.items():
        s, e = run["summary"], expert_return(run)
        cells = [name, f"{e:.0f}", f"{s['mean']:.0f} ± {s['std']:.0f}",
                 f"{s['iqm']:.0f} [{s['iqm_ci_low']:.0f}, {s['iqm_ci_high']:.0f}]", f"{100 * s['mean'] / e:.0f}%",
                 str(len(run["rows"])), f"{run['wall_s']:.0f} s", f"`{run['run_dir']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def render_tables(results: dict) -> str:
    k = results["seeds"]
    note = f"mean ± std over {k} seeds of each seed's mean evaluation return; IQM over seeds with a 95% bootstrap CI"
    lines = _table(f"BC ({note})", "task", results["bc"])
    lines += _table(f"DAgger, final iteration ({note})", "task", results["dagger"])
    lines += _table(f"DAgger with the expert mixed in (--beta_schedule linear --beta_iters {BETA_ITERS}), final "
                    f"iteration ({note})", "task", results["beta"])
    lines += _table(f"BC with --normalize_obs ({note})", "task", results["normalize"])
    lines += _table(f"BC on {STUDY_TASK} vs training steps ({note})", "training steps", results["study"])
    lines += _table(f"BC on {DATA_TASK} vs expert trajectories, bundled expert ({note})", "expert trajectories",
                    results["data"])
    lines += [f"Machine: {results['machine']}. Total wall time {results['total_wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def make_figures(results: dict, out: Path) -> None:
    """The homework's figure 2 per task (DAgger curve, BC and expert lines) and the BC study plot."""
    from bcjax.run.plots import load_run, plot_hparam, plot_learning_curves

    k = results["seeds"]
    for task in results["dagger"]:
        runs = [load_run(REPO / results[kind][task]["run_dir"]) for kind in ("bc", "dagger")]
        path = plot_learning_curves(runs, out / f"dagger_{task}.png", title=f"{task}: DAgger vs BC ({k} seeds, mean ± std)")
        print(f"wrote {path}")
    study = [load_run(REPO / run["run_dir"]) for run in results["study"].values()]
    path = plot_hparam(study, "num_agent_train_steps_per_iter", out / f"bc_steps_{STUDY_TASK}.png",
                       title=f"BC on {STUDY_TASK}: return vs training steps ({k} seeds, mean ± std)",
                       split_by="deterministic_eval")
    print(f"wrote {path}")
    beta = [load_run(REPO / results[kind][task]["run_dir"]) for task in results["beta"] for kind in ("dagger", "beta")]
    path = plot_learning_curves(beta, out / "dagger_beta.png")
    print(f"wrote {path}")
    data = [load_run(REPO / run["run_dir"]) for run in results["data"].values()]
    path = plot_hparam(data, "expert_data_trajectories", out / f"bc_data_{DATA_TASK}.png",
                       title=f"BC on {DATA_TASK}: return vs expert trajectories ({k} seeds, mean ± std)")
    print(f"wrote {path}")


# ---------------------------------------------------------------- --only bcstudy (docs/BC_STUDY.md)

def bcstudy_trials(args: ReproduceArgs, task: str, runs_dir: Path) -> dict[str, Trial]:
    """The task's rows: each recipe on the homework's 2 expert trajectories, then DART's noisy data."""
    shared, base = Path(args.shared), task.split("-")[0]
    epf = str(shared / "experts" / f"{base}.pkl")
    homework = {"expert_policy_file": epf, "expert_data": str(shared / "expert_data" / f"expert_data_{task}.pkl")}
    common = {"eval_batch_size": args.eval_batch_size, "video_log_freq": -1}
    seeds = list(range(1, (2 if args.quick else BCSTUDY_SEEDS) + 1))
    rows = {name: (homework, fields) for name, fields in BCSTUDY_ROWS.items()}
    for sigma in DART_NOISE:  # the CS285 expert's 2 trajectories again, collected with action noise (DART)
        data = collect(runs_dir / "expert_data" / f"dart_{task}_sigma{sigma}_s{DATA_SEED}.pkl", "--env_name", task,
                       "-epf", epf, "--n_traj", "2", "--seed", str(DATA_SEED), "--action_noise", str(sigma))
        dart = {"expert_policy_file": epf, "expert_data": str(data)}
        rows[f"DART σ={sigma}"], rows[f"DART σ={sigma} + normalize + 5k + cosine"] = (dart, {}), (dart, _N5C)
    quick = {"num_agent_train_steps_per_iter": 50} if args.quick else {}
    return {name: build_trials([task], ["bc"], [{}], seeds, {**files, **common, **fields, **quick}, f"bcstudy{i}")[0]
            for i, (name, (files, fields)) in enumerate(rows.items())}


def bc_study(args: ReproduceArgs, out: Path) -> None:
    """Each task's sweep in turn (one run at a time unless --max_concurrent: wall times are compared), its
    results into OUT/bc_study.json, and the page's tables and figure redrawn after each."""
    from bcjax.run.stats import summarize

    path = out / "bc_study.json"
    results = json.loads(path.read_text()) if path.is_file() else {"machine": machine(), "tasks": {}}
    for task in [] if args.redraw else BCSTUDY_TASKS[:1] if args.quick else BCSTUDY_TASKS:  # (--quick: Hopper)
        runs_dir = Path(args.runs or REPO / "runs" / ("bcstudy_quick" if args.quick else "bcstudy")) / task
        trials = bcstudy_trials(args, task, runs_dir)
        outcomes = run_sweep(list(trials.values()), SweepArgs(out=str(runs_dir), address=args.address, verbose=0,
                                                              max_concurrent=args.max_concurrent or 1))
        if failed := [o for o in outcomes if o.status != "finished"]:
            sys.exit("error: " + "; ".join(f"{o.trial.key} {o.status}: {o.error or ''}" for o in failed))
        rows = {}
        for name, o in zip(trials, outcomes):
            x = o.rows[-1]["per_seed"]["Eval_AverageReturn"]
            argv = config_argv(o.trial.config.replace(logdir=str(Path(o.run_dir).parent)))
            rows[name] = {"returns": x, **summarize(x), "worst": min(x), "wall_s": round(o.wall_s, 1),
                          "data_return": o.rows[-1]["per_seed"]["Initial_DataCollection_AverageReturn"][0],
                          "run_dir": repo_relative(o.run_dir), "command": " ".join(["scripts/train.py", *argv])}
        results["tasks"][task] = rows
        path.write_text(json.dumps(results, indent=1) + "\n")
    page = out / "BC_STUDY.md"
    text, (start, end) = page.read_text(), ("<!-- bcstudy:tables -->", "<!-- /bcstudy:tables -->")
    head, rest = text.split(start)
    page.write_text(head + start + "\n" + bcstudy_tables(results) + end + rest.split(end)[1])
    print(f"wrote {page}, {bcstudy_figure(results, out / 'bc_study.png')}")


def bcstudy_tables(results: dict) -> str:
    """One table per task, % of the expert data's return; DART's rows (other data) in their own table."""
    head = ["recipe", "return (mean ± std)", "IQM [95% CI]", "IQM, % of expert", "worst seed", "wall time"]
    lines = []
    for title, dart in (("", False), ("DART (expert data collected with action noise)", True)):
        for task, rows in results["tasks"].items():
            expert = rows["homework defaults"]["data_return"]  # the homework data's return, also for DART's rows
            lines += [f"### {task}{': ' + title if title else ''} (expert {expert:.0f}, {rows['homework defaults']['n']} "
                      "seeds)", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
            for name, r in rows.items():
                if name.startswith("DART") == dart:
                    cells = [name, f"{r['mean']:.0f} ± {r['std']:.0f}",
                             f"{r['iqm']:.0f} [{r['iqm_ci_low']:.0f}, {r['iqm_ci_high']:.0f}]",
                             f"{100 * r['iqm'] / expert:.0f}%", f"{r['worst']:.0f} ({100 * r['worst'] / expert:.0f}%)",
                             f"{r['wall_s']:.0f} s"]
                    lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines + [f"Machine: {results['machine']}.", ""])


def bcstudy_figure(results: dict, path: Path) -> Path:
    """Return (% of expert) vs recipe, one panel per task: each seed a point, the IQM a bar."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["tasks"]
    names = list(next(iter(tasks.values())))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 0.38 * len(names) + 1.5), sharey=True, squeeze=False)
    jitter = np.random.default_rng(0)
    for ax, (task, rows) in zip(axes[0], tasks.items()):
        expert = rows["homework defaults"]["data_return"]
        for i, name in enumerate(names):
            x = 100 * np.asarray(rows[name]["returns"]) / expert
            ax.scatter(np.clip(x, -10, None), i + jitter.uniform(-0.2, 0.2, len(x)), s=9, alpha=0.6,
                       color="tab:red" if name.startswith("DART") else "tab:blue")
            ax.plot([100 * rows[name]["iqm"] / expert] * 2, [i - 0.3, i + 0.3], color="black", lw=2)
        ax.axvline(100, color="gray", ls="--", lw=1)
        ax.set(title=task, xlabel="return, % of expert (dots: seeds; bar: IQM)", xlim=(-10, 110))
    axes[0][0].set_yticks(range(len(names)), names)
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
