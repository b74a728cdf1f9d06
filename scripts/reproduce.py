#!/usr/bin/env python
"""Reproduce the CS285 homework 1 results with bcjax (docs/RESULTS.md).

Runs, with the CS285 sample experts and data and the homework defaults
(eval_batch_size 5000), K seeds per run trained side by side (--num_seeds):
  1. BC on Ant-v4, HalfCheetah-v4, Hopper-v4;
  2. a BC study on Ant-v4: return vs training steps;
  3. DAgger, 10 iterations, on each task;
  4. a BC study on Ant-v4: return vs the number of expert trajectories (1 to 24,
     collected from the bundled expert with scripts/collect_expert_data.py).
Writes docs/results.json (every number with its run directory and wall time),
docs/results_tables.md and the PNG figures. Run directories go under --runs.

    python scripts/reproduce.py            # everything, ~10 minutes on 2 CPU cores
    python scripts/reproduce.py --quick    # a smoke test with tiny settings
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bcjax.logger import read_metrics  # noqa: E402
from bcjax.stats import summarize  # noqa: E402

TASKS = {"Ant-v4": "Ant", "HalfCheetah-v4": "HalfCheetah", "Hopper-v4": "Hopper"}
STUDY_TASK = "Ant-v4"
STUDY_STEPS = (100, 300, 1000, 3000, 10000)
DATA_TASK = "Ant-v4"  # the data study uses the bundled expert, which can give any number of trajectories
DATA_TRAJECTORIES = (1, 2, 4, 8, 16, 24)
DATA_SEED = 1000  # collection seed: the study's expert episodes are not the training runs' evaluation episodes


def train(args: argparse.Namespace, task: str, exp: str, *flags: str, files: list[str] | None = None) -> dict:
    """One train.py run (K seeds) under RUNS/<exp>_<task>; returns its run dir, wall time and metrics rows.
    `files` replaces the CS285 expert and data flags (-epf/-ed)."""
    shared = Path(args.shared)
    logdir = Path(args.runs) / f"{exp}_{task}"
    files = files or ["-epf", str(shared / "experts" / f"{TASKS[task]}.pkl"),
                      "-ed", str(shared / "expert_data" / f"expert_data_{task}.pkl")]
    cmd = [sys.executable, str(REPO / "scripts" / "train.py"), "--env_name", task, *files,
           "--eval_batch_size", str(args.eval_batch_size), "--num_seeds", str(args.seeds), "--seed", "1",
           "--video_log_freq", "-1", "--quiet", "--exp_name", exp, "--logdir", str(logdir), *flags]
    before = set(logdir.glob("*")) if logdir.exists() else set()
    t = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{proc.stderr.strip()}")
    (run_dir,) = set(logdir.glob("*")) - before
    print(f"  {exp}: {wall:.1f} s -> {run_dir}", flush=True)
    return {"run_dir": str(run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir),
            "wall_s": round(wall, 1), "command": " ".join(cmd[1:]), "rows": read_metrics(run_dir)}


def data_study(args: argparse.Namespace, counts: tuple[int, ...], steps: list[str]) -> dict:
    """BC on DATA_TASK from the first N of max(counts) trajectories of the bundled expert, per N."""
    from bcjax.experts import bundled_expert_path

    data = Path(args.runs) / "expert_data" / f"expert_data_{DATA_TASK}_bundled_n{max(counts)}_s{DATA_SEED}.pkl"
    if not data.is_file():
        cmd = [sys.executable, str(REPO / "scripts" / "collect_expert_data.py"), "--env_name", DATA_TASK,
               "--n_traj", str(max(counts)), "--seed", str(DATA_SEED), "--output", str(data)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"error: {' '.join(cmd)} failed:\n{proc.stderr.strip()}")
        print(f"  {proc.stdout.strip().splitlines()[0]}", flush=True)
    files = ["-epf", str(bundled_expert_path(DATA_TASK)), "-ed", str(data)]
    return {f"{n}": train(args, DATA_TASK, f"bcdata{n}", "--algo", "bc", "--expert_data_trajectories", str(n),
                          *steps, files=files) for n in counts}


def final_returns(run: dict) -> list[float]:
    return run["rows"][-1]["per_seed"]["Eval_AverageReturn"]


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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=str(REPO.parent / "shared" / "cs285"), help="folder with experts/ and expert_data/")
    p.add_argument("--runs", default=str(REPO / "runs" / "reproduce"), help="root of the run directories")
    p.add_argument("--out", default=str(REPO / "docs"), help="where results.json, tables and PNGs go")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--eval_batch_size", type=int, default=5000)
    p.add_argument("--quick", action="store_true", help="tiny settings, to check the script end to end")
    p.add_argument("--redraw", action="store_true", help="only redo tables and figures from OUT/results.json")
    args = p.parse_args()
    out = Path(args.out)
    if args.redraw:
        results = json.loads((out / "results.json").read_text())
        (out / "results_tables.md").write_text(render_tables(results))
        make_figures(results, out)
        return
    if not (Path(args.shared) / "experts").is_dir():
        sys.exit(f"error: no CS285 files in {args.shared}: pass --shared DIR holding experts/ and expert_data/")
    if args.quick:
        args.seeds, args.eval_batch_size = 2, 300
    steps = ["--num_agent_train_steps_per_iter", "50"] if args.quick else []
    study_steps = (10, 50) if args.quick else STUDY_STEPS
    n_iter = "3" if args.quick else "10"
    out.mkdir(parents=True, exist_ok=True)

    results: dict = {"machine": machine(), "seeds": args.seeds, "eval_batch_size": args.eval_batch_size,
                     "bc": {}, "study": {}, "dagger": {}, "data": {}}
    t0 = time.time()
    for task in TASKS:
        print(f"{task}:", flush=True)
        results["bc"][task] = train(args, task, "bc", "--algo", "bc", *steps)
        results["dagger"][task] = train(args, task, "dagger", "-n", n_iter, "--algo", "dagger", *steps)
    print(f"BC study on {STUDY_TASK}:", flush=True)
    for n in study_steps:
        # The homework samples actions at evaluation; the mean action shows how much of the
        # shortfall after few steps is the still-wide learned std rather than a wrong mean.
        results["study"][f"{n}"] = train(args, STUDY_TASK, f"bcsteps{n}", "--algo", "bc",
                                         "--num_agent_train_steps_per_iter", str(n))
        results["study"][f"{n}, mean action"] = train(args, STUDY_TASK, f"bcsteps{n}mean", "--algo", "bc",
                                                      "--num_agent_train_steps_per_iter", str(n),
                                                      "--deterministic_eval")
    print(f"BC vs expert trajectories on {DATA_TASK}:", flush=True)
    results["data"] = data_study(args, (1, 2) if args.quick else DATA_TRAJECTORIES, steps)
    results["total_wall_s"] = round(time.time() - t0, 1)

    for kind in ("bc", "dagger", "study", "data"):
        for run in results[kind].values():
            run["summary"] = summarize(final_returns(run))
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
    lines += _table(f"BC on {STUDY_TASK} vs training steps ({note})", "training steps", results["study"])
    if results.get("data"):
        lines += _table(f"BC on {DATA_TASK} vs expert trajectories, bundled expert ({note})", "expert trajectories",
                        results["data"])
    lines += [f"Machine: {results['machine']}. Total wall time {results['total_wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def make_figures(results: dict, out: Path) -> None:
    """The homework's figure 2 per task (DAgger curve, BC and expert lines) and the BC study plot."""
    from bcjax.plots import load_run, plot_hparam, plot_learning_curves

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
    if results.get("data"):
        runs = [load_run(REPO / run["run_dir"]) for run in results["data"].values()]
        path = plot_hparam(runs, "expert_data_trajectories", out / f"bc_data_{DATA_TASK}.png",
                           title=f"BC on {DATA_TASK}: return vs expert trajectories ({k} seeds, mean ± std)")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
