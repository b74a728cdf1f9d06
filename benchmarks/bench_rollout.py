#!/usr/bin/env python
"""Rollout throughput: env steps/s on Hopper-v4 and Ant-v4, side by side in one process.

- raw: one env stepped with precomputed random actions, reset when an episode
  ends: the limit a rollout can reach.
- policy, numpy: bcjax's rollout (`sample_trajectories`) with the policy in the
  loop (bcjax's host actor: the 2x64 MLP in numpy, actions sampled).
- policy, jitted JAX: the same loop calling a jitted flax apply per step, for
  comparison (what the host actor avoids).
- vector raw N / vector N: gymnasium vector envs stepped with random actions,
  and bcjax's vector rollout (one batched policy call per vector step, the
  single-env episode accounting).

Steps/s count the steps kept in trajectories (a vector rollout also steps envs
whose episodes end up dropped). Medians of interleaved rounds.

    python benchmarks/bench_rollout.py [--rounds 5] [--steps 5000] [--vector 2 4 8] [--async_envs 2]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import _common
import numpy as np

ENVS = ("Hopper-v4", "Ant-v4")


def bench_env(env_name: str, args: argparse.Namespace) -> list[dict]:
    """All variants on one task, interleaved."""
    import jax

    from bcjax.acting.envs import env_info, make_env, make_vector_env
    from bcjax.acting.rollout import sample_trajectories
    from bcjax.core.model import MLPPolicy, apply, host_actor, init_params

    results = []
    env = make_env(env_name, seed=0)
    info = env_info(env)
    ep_len = info.max_episode_steps
    policy = MLPPolicy(act_dim=info.act_dim)
    params = init_params(policy, jax.random.PRNGKey(0), info.obs_dim)
    rng = np.random.default_rng(0)
    actor = host_actor(policy, params, rng)
    apply_jit = jax.jit(lambda p, o: apply(policy, p, o))
    std = np.exp(np.asarray(params["params"]["log_std"]))

    def jax_actor(obs: np.ndarray) -> np.ndarray:
        out = np.asarray(apply_jit(params, obs))
        return out + std * rng.standard_normal(out.shape, dtype=np.float32)

    low, high = env.action_space.low, env.action_space.high
    lengths: dict[str, list[float]] = {}

    def raw() -> float:
        actions = rng.uniform(low, high, (args.steps, len(low))).astype(np.float32)
        episodes = [0]

        def loop() -> None:
            env.reset()
            for a in actions:
                _, _, terminated, truncated, _ = env.step(a)
                if terminated or truncated:
                    env.reset()
                    episodes[0] += 1
        rate = args.steps / _common.timed(loop)
        lengths.setdefault("raw", []).append(args.steps / max(1, episodes[0]))
        return rate

    def rollout(name, env, actor) -> Callable[[], float]:
        def run() -> float:
            out = {}
            seconds = _common.timed(lambda: out.update(r=sample_trajectories(env, actor, args.steps, ep_len)))
            paths, steps = out["r"]
            lengths.setdefault(name, []).append(steps / len(paths))
            return steps / seconds
        return run

    def vector_raw(venv, n) -> Callable[[], float]:
        def run() -> float:
            actions = rng.uniform(low, high, (args.steps // n, n, len(low))).astype(np.float32)
            venv.reset()
            return (args.steps // n) * n / _common.timed(lambda: [venv.step(a) for a in actions])
        return run

    variants = {"raw (random actions)": raw,
                "policy, numpy (bcjax)": rollout("policy, numpy (bcjax)", env, actor),
                "policy, jitted JAX": rollout("policy, jitted JAX", env, jax_actor)}
    venvs = []
    for mode, sizes in (("sync", args.vector), ("async", args.async_envs)):
        for n in sizes:
            venv = make_vector_env(env_name, n, mode, seed=1)
            venvs.append(venv)
            variants[f"vector {mode} N={n}, raw"] = vector_raw(venv, n)
            name = f"vector {mode} N={n}, policy (bcjax)"
            variants[name] = rollout(name, venv, actor)
    for run in variants.values():  # warm-up: jit compile, async workers up
        run()
    lengths.clear()
    rates = _common.interleaved(variants, args.rounds)
    raw_rate = _common.median(rates["raw (random actions)"])
    for name, rs in rates.items():
        key = "raw" if name.startswith("raw") else name
        results.append({"env": env_name, "variant": name, "steps_per_s": _common.median(rs), "rounds": rs,
                        "vs_raw": _common.median(rs) / raw_rate,
                        "mean_episode_length": _common.median(lengths[key]) if key in lengths else None})
    for venv in venvs:
        venv.close()
    env.close()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5000, help="env steps per timed run")
    p.add_argument("--vector", type=int, nargs="*", default=[2, 4, 8], help="vector env sizes (sync)")
    p.add_argument("--async_envs", type=int, nargs="*", default=[2], help="vector env sizes to run async too")
    p.add_argument("--cpu_threads", type=int, default=1, help="JAX's CPU pool, as the CLI sets it (0: default)")
    p.add_argument("--out", default=str(_common.RESULTS / "rollout.json"))
    args = p.parse_args()
    if args.cpu_threads:
        from bcjax.run.perf import limit_cpu_threads

        limit_cpu_threads(args.cpu_threads)
    results = [r for env_name in ENVS for r in bench_env(env_name, args)]

    print(f"\nEnv steps/s (medians of {args.rounds} interleaved rounds of {args.steps} steps)\n")
    _common.print_table(
        ["env", "variant", "steps/s", "vs raw", "mean episode length"],
        [[r["env"], r["variant"], r["steps_per_s"], f'{r["vs_raw"]:.2f}',
          "" if r["mean_episode_length"] is None else f'{r["mean_episode_length"]:.0f}'] for r in results])
    summary = {}
    for env_name in ENVS:
        by = {r["variant"]: r for r in results if r["env"] == env_name}
        summary[env_name] = {"policy_vs_raw": by["policy, numpy (bcjax)"]["vs_raw"]}
        print(f"{env_name}: policy in the loop = {summary[env_name]['policy_vs_raw']:.0%} of raw (target >= 85%)")
    _common.write_json(args.out, {"benchmark": "rollout", "machine": _common.machine(), "args": vars(args),
                                  "results": results, "summary": summary})


if __name__ == "__main__":
    main()
