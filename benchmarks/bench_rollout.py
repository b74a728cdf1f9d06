#!/usr/bin/env python
"""Rollout throughput: env steps/s of collection and evaluation, one gymnasium env vs bcjax's MuJoCo batch.

- gymnasium env: one gymnasium env, reset(seed=...) then whole episodes (`sample_trajectory`), the
  policy in numpy in the loop: one seed's rollout, one episode after another.
- batch K x n, T threads: bcjax's rollouts (`run_tasks`): K seeds' tasks of n envs each, all K*n
  simulations stepped together in one mujoco.batch.Batch on T threads, one batched policy call per step.
- collection + evaluation: a DAgger iteration's rollouts as the loop runs them, each seed's evaluation
  (5 envs) in one batch with its next collection (1 env); the baseline runs both phases' steps on one env.

Collection is `--batch_size` steps per seed, evaluation `--eval_batch_size` (both sampled actions, as
the homework's defaults). The policy is the bundled expert's network with log_std -1 (episodes of a
trained student's length). Steps/s count the steps kept in trajectories; medians of interleaved rounds.

    python benchmarks/bench_rollout.py [--rounds 5] [--envs Hopper-v4] [--configs 1x1x1 8x1x2 ...]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import _common
import numpy as np


def bench_env(env_name: str, args: argparse.Namespace) -> list[dict]:
    """The gymnasium baseline and every batch config, for collection and evaluation, interleaved."""
    from bcjax.acting.envs import make_env
    from bcjax.acting.rollout import sample_trajectory
    from bcjax.acting.runner import RolloutTask, make_rows, run_tasks
    from bcjax.core.mlp import NumpyMLP
    from bcjax.data.bundled import bundled_expert_path
    from bcjax.data.expert import load_expert

    expert = load_expert(str(bundled_expert_path(env_name)))
    spec = expert.spec._replace(fit_input=False, task=None)
    params = {"params": {**expert.params["params"], "log_std": np.full(spec.act_dim, -1.0, np.float32)}}
    ep_len = make_env(env_name).spec.max_episode_steps
    phases = {"collection": args.batch_size, "evaluation": args.eval_batch_size}
    variants: dict[str, Callable[[], float]] = {}

    def gymnasium(steps: int) -> Callable[[], float]:
        env = make_env(env_name)

        def run() -> float:
            env.reset(seed=1)
            actor, done, start = NumpyMLP(spec, params, np.random.default_rng(0)), 0, time.perf_counter()
            while done < steps:
                done += len(sample_trajectory(env, actor, ep_len)[0]["reward"])
            return done / (time.perf_counter() - start)
        return run

    def batch(k: int, n: int, threads: int, steps: int) -> Callable[[], float]:
        env = make_rows(env_name, k * n, threads)

        def run() -> float:
            tasks = [RolloutTask("collect", i, env_name, n, spec, params, 1 + i, 100 + i, steps, ep_len) for i in range(k)]
            out: list = []
            seconds = _common.timed(lambda: out.extend(run_tasks(tasks, env)))
            return sum(len(p["reward"]) for r in out for p in r.paths) / seconds
        return run

    def loop(k: int, threads: int) -> Callable[[], float]:
        """A DAgger iteration's rollouts: each seed's evaluation (5 envs) with its next collection (1 env)."""
        env = make_rows(env_name, 6 * k, threads)

        def run() -> float:
            tasks = [RolloutTask("eval", i, env_name, 5, spec, params, 1 + i, 100 + i, args.eval_batch_size, ep_len)
                     for i in range(k)] + [RolloutTask("collect", i, env_name, 1, spec, params, 50 + i, 150 + i,
                                                       args.batch_size, ep_len) for i in range(k)]
            out: list = []
            seconds = _common.timed(lambda: out.extend(run_tasks(tasks, env)))
            return sum(len(p["reward"]) for r in out for p in r.paths) / seconds
        return run

    for phase, steps in phases.items():
        variants[f"{phase}: gymnasium env"] = gymnasium(steps)
        for config in args.configs:
            k, n, threads = (int(x) for x in config.split("x"))
            variants[f"{phase}: batch {k} seeds x {n} envs, {threads} threads"] = batch(k, n, threads, steps)
    gym_both = gymnasium(args.batch_size + args.eval_batch_size)
    variants["collection + evaluation: gymnasium env"] = gym_both
    for k, threads in ((1, 1), (1, 2), (5, 2)):
        variants[f"collection + evaluation: batch {k} seeds x (1 + 5) envs, {threads} threads"] = loop(k, threads)
    for run in variants.values():  # warm-up
        run()
    rates = _common.interleaved(variants, args.rounds)
    results = []
    for name, rs in rates.items():
        phase = name.split(":")[0]
        base = _common.median(rates[f"{phase}: gymnasium env"])
        results.append({"env": env_name, "phase": phase, "variant": name.split(": ")[1], "steps_per_s": _common.median(rs),
                        "rounds": rs, "vs_gymnasium": _common.median(rs) / base})
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--envs", nargs="*", default=["Hopper-v4"])
    p.add_argument("--configs", nargs="*", default=["1x1x1", "4x1x1", "8x1x1", "4x1x2", "8x1x2", "16x1x2", "4x2x2"],
                   help="batch configs as SEEDSxENVSxTHREADS")
    p.add_argument("--batch_size", type=int, default=1000, help="collection steps per seed (the homework's default)")
    p.add_argument("--eval_batch_size", type=int, default=5000, help="evaluation steps per seed")
    p.add_argument("--out", default=str(_common.RESULTS / "rollout.json"))
    args = p.parse_args()
    results = [r for env_name in args.envs for r in bench_env(env_name, args)]

    print(f"\nEnv steps/s (medians of {args.rounds} interleaved rounds)\n")
    _common.print_table(["env", "phase", "variant", "steps/s", "vs one gymnasium env"],
                        [[r["env"], r["phase"], r["variant"], r["steps_per_s"], f'{r["vs_gymnasium"]:.2f}']
                         for r in results])
    summary = {f'{r["env"]} {r["phase"]}': max(x["vs_gymnasium"] for x in results
                                                if (x["env"], x["phase"]) == (r["env"], r["phase"])) for r in results}
    for key, best in summary.items():
        print(f"{key}: best batch config = {best:.2f}x one gymnasium env (target >= 2.3x on Hopper)")
    _common.write_json(args.out, {"benchmark": "rollout", "machine": _common.machine(), "args": vars(args),
                                  "results": results, "best_vs_gymnasium": summary})


if __name__ == "__main__":
    main()
