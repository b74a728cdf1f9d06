#!/usr/bin/env python
"""Sweeps on Ray Tune: what a trial costs beyond its run, how to pack seeds, and the homework's results page.

- overhead: N tiny one-seed BC trials one at a time on the embedded Ray, against a sweep of
  one such trial: the marginal wall time of a trial, less its run's own `total` (the bcjax
  run's timing line in its trial.log), is what a trial costs beyond its run. Measured with
  warm workers (the sweep's default: Tune reuses a trial's Ray worker, its imports and
  compiled programs, for the next trial) and cold ones (a fresh worker per trial, as
  before), then the same run as `scripts/train.py` in a fresh process.
- packing: K seeds of one setting as one trial (vmapped, --seeds_per_trial K) against
  K trials of one seed each, on all cores; the sweep's default packs seeds into one
  trial unless free trial slots would otherwise sit idle.
- reproduce: `scripts/reproduce.py` (the results page) on one node (the embedded Ray on
  all cores) and on a two-node cluster on this machine (`ray.cluster_utils.Cluster`: a
  head and one more node, one CPU each, `--address`), each into a fresh folder (needs
  ../shared/cs285), each with an empty compilation cache of its own.

    python benchmarks/bench_sweep.py overhead [--trials 8]
    python benchmarks/bench_sweep.py packing [--seeds 4]
    python benchmarks/bench_sweep.py reproduce [--quick]

Results go to benchmarks/results/sweep_<what>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

TINY = ["--env_name", "Hopper-v4", "--num_agent_train_steps_per_iter", "100", "--eval_batch_size", "200",
        "--ep_len", "200", "--video_log_freq", "-1", "--quiet"]


def _trial_costs(tmp: Path, name: str, n: int) -> dict:
    """A sweep of one trial and one of `n`, one trial at a time: the marginal trial's wall time and its run's own."""
    from bcjax.run.config import given_flags
    from bcjax.sweeps.runner import run_sweep
    from bcjax.sweeps.trials import SweepArgs, build_trials

    def sweep(k: int) -> tuple[float, list]:
        trials = build_trials(["Hopper-v4"], ["bc"], [{}], list(range(1, k + 1)), given_flags(TINY[2:]),
                              seeds_per_trial=1)
        t = time.time()
        outcomes = run_sweep(trials, SweepArgs(out=str(tmp / f"{name}{k}"), max_concurrent=1))
        return time.time() - t, outcomes

    one, _ = sweep(1)
    wall, outcomes = sweep(n)
    logs = [(tmp / f"{name}{n}" / "runs" / o.trial.key / "trial.log").read_text() for o in outcomes[1:]]
    run_s = statistics.mean(float(re.search(r"total ([\d.]+)", log).group(1)) for log in logs)
    per_trial = (wall - one) / (n - 1)
    return {"first_trial_sweep_s": round(one, 1), "trial_wall_s": round(per_trial, 2), "run_total_s": round(run_s, 2),
            "overhead_s": round(per_trial - run_s, 2)}


def overhead(args: argparse.Namespace, tmp: Path) -> dict:
    from ray import tune

    from bcjax.sweeps.runner import start_ray

    start_ray(None)
    warm = _trial_costs(tmp, "warm", args.trials)
    config = tune.TuneConfig
    tune.TuneConfig = lambda **kw: config(**{**kw, "reuse_actors": False})  # a fresh Ray worker per trial
    cold = _trial_costs(tmp, "cold", args.trials)
    tune.TuneConfig = config
    t = time.time()
    subprocess.run([sys.executable, str(_common.ROOT / "scripts" / "train.py"), *TINY, "--logdir", str(tmp / "plain")],
                   check=True, capture_output=True)
    return {"trials": args.trials, "warm_workers": warm, "cold_workers": cold,
            "train_py_process_wall_s": round(time.time() - t, 1)}


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

    from ray.cluster_utils import Cluster

    # Each its own empty compilation cache (the nodes' workers inherit it from this process, as they inherit
    # PYTHONPATH to import this bcjax): neither run loads what the other compiled.
    os.environ.update(BCJAX_CACHE_DIR=str(tmp / "one_node_cache"), PYTHONPATH=str(_common.ROOT))
    one_node = timed("one_node")
    os.environ["BCJAX_CACHE_DIR"] = str(tmp / "two_nodes_cache")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        two_nodes = timed("two_nodes", "--address", cluster.address)
    finally:
        cluster.shutdown()
    return {"quick": args.quick, "one_node_s": one_node, "two_nodes_one_cpu_each_s": two_nodes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["overhead", "packing", "reproduce"])
    p.add_argument("--trials", type=int, default=8)
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
