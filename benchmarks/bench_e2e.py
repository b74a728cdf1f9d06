#!/usr/bin/env python
"""End to end: whole runs a user types, bcjax beside the homework's own PyTorch pipeline.

Homework defaults, `--eval_batch_size 5000`, no videos. Every run is the real
command in a fresh process, so start-up (imports, expert loading) and JIT
compilation count; the variants alternate run by run, and the table gives medians.

- bcjax, cold: `scripts/train.py` with an empty compile cache (a first run ever);
- bcjax, warm: the same with the compile cache an earlier run filled (every re-run);
- bcjax, warm, --num_envs 1: the same on one env per seed, one episode after another (the same metrics:
  what running a seed's episodes side by side, the default, gains);
- homework: `cs285/scripts/run_hw1.py` of a solved CS285 hw1 checkout (`--homework
  DIR`, run by `--homework_python`, by default DIR/.venv/bin/python), torch on one
  thread. Without `--homework`, bcjax only.

Cases: `dagger-hopper` (DAgger Hopper-v4, 10 iterations, seeds 1-3 in turn),
`dagger-ant` and `dagger-halfcheetah` (DAgger, seed 1), `bc-hopper` (BC Hopper-v4, seeds 1-3),
`seeds-hopper` (DAgger Hopper-v4 with --num_seeds 5 against one seed, bcjax only).

    python benchmarks/bench_e2e.py --cs285 CS285_DIR [--homework HW_DIR] [--runs 3] [--cases dagger-hopper,...]

CS285_DIR holds the homework's expert files: policies/experts/*.pkl (or experts/*.pkl)
and expert_data/*.pkl.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import _common

TASK_FILES = {"Hopper-v4": ("Hopper.pkl", "expert_data_Hopper-v4.pkl"),
              "Ant-v4": ("Ant.pkl", "expert_data_Ant-v4.pkl"),
              "HalfCheetah-v4": ("HalfCheetah.pkl", "expert_data_HalfCheetah-v4.pkl")}
ONE_ENV = "bcjax, warm, --num_envs 1"  # each seed's episodes one after another (the same metrics)
PHASES = ("start-up", "imports", "learner", "compile", "rollouts", "relabel", "training", "evaluation", "checkpoint",
          "fixed cost")


@dataclass(frozen=True)
class Case:
    env: str
    algo: str
    seeds: tuple[int, ...]
    target: str  # what the issue asks of it, printed beside the result
    num_seeds: int = 1  # > 1: bcjax with --num_seeds N against bcjax with one seed


CASES = {
    "dagger-hopper": Case("Hopper-v4", "dagger", (1, 2, 3), "homework / bcjax >= 4.5x warm"),
    "dagger-ant": Case("Ant-v4", "dagger", (1,), "homework / bcjax >= 3.5x warm"),
    "dagger-halfcheetah": Case("HalfCheetah-v4", "dagger", (1,), "homework / bcjax >= 4x warm"),
    "bc-hopper": Case("Hopper-v4", "bc", (1, 2, 3), "homework / bcjax >= 2x warm, >= 1.3x cold"),
    "seeds-hopper": Case("Hopper-v4", "dagger", (1, 2, 3), "5 seeds <= 3x one seed's wall time", num_seeds=5),
}


def expert_files(cs285: Path, env: str) -> tuple[Path, Path]:
    policy, data = TASK_FILES[env]
    experts = cs285 / "policies" / "experts" if (cs285 / "policies" / "experts").is_dir() else cs285 / "experts"
    return experts / policy, cs285 / "expert_data" / data


def run_process(cmd: list[str], env: dict, cwd: Path, first_iteration: str) -> tuple[float, float, float, str]:
    """Wall seconds, seconds to the line that starts the first iteration (the start-up as seen from outside),
    peak RSS (MiB) and output of one command."""
    start, first = time.perf_counter(), None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                            env={**env, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stdout:
        if first is None and first_iteration in line:
            first = time.perf_counter() - start
        lines.append(line)
    _, status, usage = os.wait4(proc.pid, 0)
    wall, out = time.perf_counter() - start, "".join(lines)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return wall, first or float("nan"), usage.ru_maxrss / 1024, out


def homework_flags(case: Case, seed: int, cs285: Path) -> list[str]:
    policy, data = expert_files(cs285, case.env)
    dagger = ["--do_dagger", "-n", "10"] if case.algo == "dagger" else []
    return ["-epf", str(policy), "-ed", str(data), "--env_name", case.env, *dagger, "--video_log_freq", "-1",
            "--eval_batch_size", "5000", "--seed", str(seed)]


def bcjax_run(case: Case, seed: int, cs285: Path, logdir: str, cache_dir: str, num_seeds: int = 1,
              flags: tuple[str, ...] = ()) -> dict:
    cmd = [sys.executable, "scripts/train.py", "--exp_name", "e2e", *homework_flags(case, seed, cs285),
           "--num_seeds", str(num_seeds), "--logdir", logdir, "--quiet", *flags]
    wall, _, rss, out = run_process(cmd, {**os.environ, "BCJAX_CACHE_DIR": cache_dir}, _common.ROOT, "itr 0/")
    line = next(x for x in out.splitlines() if x.startswith("time (s):"))
    # "name value" pieces between the line's separators: start-up, its parts, the phases, total, fixed cost
    times = {m[1].strip(): float(m[2]) for m in re.finditer(r"([a-z][a-z -]*?) (\d+\.\d+)", line[9:])}
    phases = {p: times.get(p, 0.0) for p in PHASES}
    returns = re.findall(r"eval (-?\d+\.\d+)", out)
    return {"wall_s": wall, "peak_rss_mib": rss, "phases": phases, "final_eval_return": float(returns[-1])}


def homework_run(case: Case, seed: int, cs285: Path, homework: Path, python: str) -> dict:
    cmd = [python, "cs285/scripts/run_hw1.py", "--exp_name", "e2e", *homework_flags(case, seed, cs285), "--no_gpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # torch on one thread, as bcjax's default
    wall, first, rss, out = run_process(cmd, env, homework, "********** Iteration 0")
    returns = re.findall(r"Eval_AverageReturn : (-?\d+\.?\d*)", out)
    return {"wall_s": wall, "peak_rss_mib": rss, "phases": {"start-up": first},
            "final_eval_return": float(returns[-1]) if returns else None}


def measure(name: str, case: Case, args: argparse.Namespace, tmp: Path) -> dict:
    """The case's variants, alternating run by run."""
    warm = str(tmp / "warm-cache")
    bcjax_run(case, 1, args.cs285, str(tmp), warm)  # fills the warm cache
    variants: dict[str, list[dict]] = {"bcjax, cold": [], "bcjax, warm": []}
    if case.num_seeds > 1:
        variants = {"bcjax, 1 seed, warm": [], f"bcjax, {case.num_seeds} seeds, warm": []}
        bcjax_run(case, 1, args.cs285, str(tmp), warm, case.num_seeds)
    else:
        variants[ONE_ENV] = []
        if args.homework:
            variants["homework (PyTorch)"] = []
    for i in range(args.runs):
        seed = case.seeds[i % len(case.seeds)]
        for variant, rs in variants.items():
            if variant == "bcjax, cold":
                r = bcjax_run(case, seed, args.cs285, str(tmp), str(tmp / f"cold-{i}"))
            elif variant == ONE_ENV:
                r = bcjax_run(case, seed, args.cs285, str(tmp), warm, flags=("--num_envs", "1"))
            elif variant.startswith("bcjax"):
                r = bcjax_run(case, seed, args.cs285, str(tmp), warm, case.num_seeds if " 1 seed" not in variant else 1)
            else:
                r = homework_run(case, seed, args.cs285, args.homework, args.homework_python)
            print(f"  {name}, {variant}, seed {seed}: {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB, "
                  f"final eval return {r['final_eval_return']}", flush=True)
            rs.append(r)
    out = {}
    for variant, rs in variants.items():
        out[variant] = {"wall_s": _common.median([r["wall_s"] for r in rs]),
                        "peak_rss_mib": _common.median([r["peak_rss_mib"] for r in rs]), "runs": rs}
        if "phases" in rs[0]:
            out[variant]["phases"] = {p: _common.median([r["phases"][p] for r in rs]) for p in rs[0]["phases"]}
    return out


def ratios(case: Case, result: dict) -> dict[str, float]:
    """homework / bcjax per bcjax variant, or K seeds / 1 seed."""
    if case.num_seeds > 1:
        one, many = result.values()
        return {f"{case.num_seeds} seeds / 1 seed": many["wall_s"] / one["wall_s"]}
    if "homework (PyTorch)" not in result:
        return {}
    hw = result["homework (PyTorch)"]["wall_s"]
    return {f"homework / {v}": hw / r["wall_s"] for v, r in result.items() if v.startswith("bcjax")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cs285", type=Path, required=True, help="directory with the homework's expert files")
    p.add_argument("--homework", type=Path, default=None, help="a solved CS285 hw1 checkout (the reference)")
    p.add_argument("--homework_python", default=None, help="its Python (default HOMEWORK/.venv/bin/python)")
    p.add_argument("--runs", type=int, default=3, help="runs per variant, alternating")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--out", type=Path, default=_common.RESULTS / "e2e.json")
    args = p.parse_args()
    args.cs285 = args.cs285.resolve()  # the homework runs from its own directory
    cases = args.cases.split(",")
    if unknown := [c for c in cases if c not in CASES]:
        raise SystemExit(f"unknown case {unknown[0]}: pick from {', '.join(CASES)}")
    for c in cases:
        for f in expert_files(args.cs285, CASES[c].env):
            if not f.is_file():
                raise SystemExit(f"no {f}: --cs285 must hold the homework's expert files")
    if args.homework:
        args.homework_python = args.homework_python or str(args.homework / ".venv" / "bin" / "python")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in cases:
            results[name] = measure(name, CASES[name], args, Path(tmp) / name)
    rows = []
    for name in cases:
        case, result = CASES[name], results[name]
        for variant, r in result.items():
            ph = r.get("phases", {})
            rows.append([name, variant, f"{r['wall_s']:.1f}", *(f"{ph[p]:.1f}" if p in ph else "" for p in PHASES),
                         f"{r['peak_rss_mib']:.0f}"])
        for what, x in ratios(case, result).items():
            rows.append([name, what, f"{x:.2f}x", *[""] * len(PHASES), case.target])
    print(f"\nseconds, medians of {args.runs} runs (fresh processes, alternating)\n")
    _common.print_table(["case", "variant", "wall", *PHASES, "peak RSS MiB"], rows)
    _common.write_json(args.out, {"benchmark": "e2e", "machine": _common.machine(),
                                  "command": " ".join(["python", "benchmarks/bench_e2e.py", *sys.argv[1:]]),
                                  "results": results, "ratios": {n: ratios(CASES[n], results[n]) for n in cases}})


if __name__ == "__main__":
    main()
