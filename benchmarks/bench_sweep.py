#!/usr/bin/env python
"""Sweeps on Ray Tune: what Ray costs per trial, how to pack seeds, and the homework's results page.

- overhead: a sweep of N no-op trials (one tune.report each) one at a time on the
  embedded Ray against a sweep of one: the marginal time per trial is what Tune adds
  (an actor per trial, its result files). Then one tiny bcjax run as a sweep trial
  against the same run as `scripts/train.py` in a fresh process (both pay JAX's
  start-up and compilation).
- packing: K seeds of one setting as one trial (vmapped, --seeds_per_trial K) against
  K trials of one seed each, on all cores; the sweep's default packs seeds into one
  trial unless free trial slots would otherwise sit idle.
- reproduce: `scripts/reproduce.py` through Ray (as many runs at once as cores) and with
  --max_concurrent 1 (one run at a time, as the script ran before it was a sweep), each
  into a fresh folder (needs ../shared/cs285).

    python benchmarks/bench_sweep.py overhead [--trials 10]
    python benchmarks/bench_sweep.py packing [--seeds 4]
    python benchmarks/bench_sweep.py reproduce [--quick]

Results go to benchmarks/results/sweep_<what>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

TINY = ["--env_name", "Hopper-v4", "--num_agent_train_steps_per_iter", "100", "--eval_batch_size", "200",
        "--ep_len", "200", "--video_log_freq", "-1", "--quiet"]


def _noop(config: dict) -> None:
    from ray import tune

    tune.report({"x": 1.0})


def overhead(args: argparse.Namespace, tmp: Path) -> dict:
    from ray import tune

    from bcjax.run.config import given_flags
    from bcjax.sweeps.runner import run_sweep, start_ray
    from bcjax.sweeps.trials import SweepArgs, build_trials

    start_ray(None)

    def fit(n: int) -> float:
        t = time.time()
        tune.Tuner(tune.with_resources(_noop, {"cpu": 1}), param_space={"i": tune.grid_search(list(range(n)))},
                   tune_config=tune.TuneConfig(max_concurrent_trials=1),
                   run_config=tune.RunConfig(storage_path=str(tmp), name=f"noop{n}", verbose=0)).fit()
        return time.time() - t

    one = fit(1)
    per_trial = (fit(args.trials) - one) / (args.trials - 1)  # the marginal cost of a trial, one at a time
    (trial,) = build_trials(["Hopper-v4"], ["bc"], [{}], [1], given_flags(TINY[2:]))  # its task is the trial's
    t = time.time()
    (o,) = run_sweep([trial], SweepArgs(out=str(tmp / "one"), verbose=0))
    sweep_wall = time.time() - t
    t = time.time()
    subprocess.run([sys.executable, str(_common.ROOT / "scripts" / "train.py"), *TINY, "--logdir", str(tmp / "plain")],
                   check=True, capture_output=True)
    plain_wall = time.time() - t
    return {"noop_trials": args.trials, "tune_s_first_noop_sweep": round(one, 2), "tune_s_per_noop_trial": round(per_trial, 2),
            "bcjax_trial_wall_s": round(sweep_wall, 1), "bcjax_trial_inside_s": round(o.wall_s, 1),
            "train_py_process_wall_s": round(plain_wall, 1)}


def _sweep(tmp: Path, name: str, *flags: str) -> float:
    t = time.time()
    subprocess.run([sys.executable, str(_common.ROOT / "scripts" / "sweep.py"), "--algo", "dagger", "-n", "3",
                    *TINY, "--out", str(tmp / name), *flags], check=True, capture_output=True)
    return round(time.time() - t, 1)


def packing(args: argparse.Namespace, tmp: Path) -> dict:
    seeds = f"1-{args.seeds}"
    return {"seeds": args.seeds,
            "one_trial_vmapped_s": _sweep(tmp, "vmapped", "--seeds", seeds, "--seeds_per_trial", str(args.seeds)),
            "one_trial_per_seed_s": _sweep(tmp, "spread", "--seeds", seeds, "--seeds_per_trial", "1")}


def reproduce(args: argparse.Namespace, tmp: Path) -> dict:
    def timed(name: str, *flags: str) -> float:
        t = time.time()
        subprocess.run([sys.executable, str(_common.ROOT / "scripts" / "reproduce.py"), "--runs", str(tmp / name),
                        "--out", str(tmp / f"{name}_docs"), *(["--quick"] if args.quick else []), *flags],
                       check=True, capture_output=True)
        return round(time.time() - t, 1)

    return {"quick": args.quick, "through_ray_s": timed("ray"), "one_run_at_a_time_s": timed("serial", "--max_concurrent", "1")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["overhead", "packing", "reproduce"])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="reproduce: its --quick settings")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {"overhead": overhead, "packing": packing, "reproduce": reproduce}[args.what](args, Path(tmp))
    result["machine"] = _common.machine()
    path = _common.RESULTS / f"sweep_{args.what}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
