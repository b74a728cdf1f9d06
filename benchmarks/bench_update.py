#!/usr/bin/env python
"""Update throughput: gradient steps/s of BC's update (Gaussian NLL, Adam, minibatch 100, 2x64 tanh MLP).

Measured side by side in one process, in interleaved rounds (medians), for Ant
sizes (111 -> 8) and Hopper sizes (11 -> 3):

- PyTorch per step: the CS285 homework's MLPPolicySL.update (mean net, free
  log-std, one Adam, loss fetched every step), torch pinned to one thread, on
  minibatches drawn uniformly with replacement like bcjax's; a second row adds
  the homework's own sampler (a permutation of the whole buffer per step).
  Needs the `bench` extra (torch==2.13.0); skipped with a notice without it.
- JAX scan: the iteration's updates fused in one lax.scan (bcjax.core.update.fit).
- JAX vmap K seeds: the scan vmapped over K independent seeds (--num_seeds K);
  steps/s per seed and in total.

    python benchmarks/bench_update.py [--rounds 7] [--seeds 8] [--cpu_threads 0]
"""

from __future__ import annotations

import argparse
import time

import _common
import numpy as np

SIZES = {"Ant": (111, 8), "Hopper": (11, 3)}
BUFFER_ROWS = 20_000  # about the buffer of a default 10-iteration DAgger run
BATCH, HIDDEN = 100, 64


def flops_per_step(obs_dim: int, act_dim: int) -> int:
    """Matmul FLOPs of one update: forward, weight gradients, and input gradients below the first layer."""
    i, h, a = obs_dim, HIDDEN, act_dim
    return 2 * BATCH * (2 * i * h + 3 * h * h + 3 * h * a)


def matmul_peak_gflops() -> float:
    """What JAX's CPU pool reaches on a large float32 matmul: the ceiling for the updates."""
    import jax
    import jax.numpy as jnp

    n = 1024
    x = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(x).block_until_ready()
    seconds = min(_common.timed(lambda: f(x).block_until_ready()) for _ in range(20))
    return 2 * n**3 / seconds / 1e9


def make_data(obs_dim: int, act_dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((BUFFER_ROWS, obs_dim)).astype(np.float32)
    acs = np.tanh(obs @ rng.standard_normal((obs_dim, act_dim)) / np.sqrt(obs_dim)).astype(np.float32)
    return obs, acs


def torch_variants(obs: np.ndarray, acs: np.ndarray, steps: int, lr: float) -> dict:
    """The homework's per-step loop: sample a minibatch on the host, MLPPolicySL.update, loss to numpy."""
    import torch
    from torch_homework import MLPPolicySL

    torch.set_num_threads(1)  # 2 threads on a busy 2-core machine collapse to ~20 steps/s (MEASUREMENTS.md)
    torch.manual_seed(0)
    policy = MLPPolicySL(acs.shape[1], obs.shape[1], lr)
    rng = np.random.default_rng(0)

    def uniform() -> float:
        def loop() -> None:
            for _ in range(steps):
                idx = rng.integers(0, len(obs), 100)
                policy.update(obs[idx], acs[idx])
        return steps / _common.timed(loop)

    def homework_sampler() -> float:
        def loop() -> None:
            for _ in range(steps):
                idx = np.random.permutation(len(obs))[:100]  # ReplayBuffer.sample_random_data
                policy.update(obs[idx], acs[idx])
        return steps / _common.timed(loop)

    return {"PyTorch per step (homework update)": uniform,
            "PyTorch per step, homework sampler": homework_sampler}


def jax_variants(obs: np.ndarray, acs: np.ndarray, steps: int, lr: float, seeds: int) -> tuple[dict, dict]:
    """bcjax's fit, compiled ahead (compile seconds returned separately), for one seed and for K."""
    import jax

    from bcjax.core import buffer as rb
    from bcjax.core.model import MLPPolicy
    from bcjax.core.update import compile_fit, create_train_states

    policy = MLPPolicy(act_dim=acs.shape[1])
    variants, compile_s = {}, {}
    for name, k in (("JAX scan", 1), (f"JAX vmap {seeds} seeds (scan)", seeds)):
        keys = jax.random.split(jax.random.PRNGKey(0), k)
        state = {"s": create_train_states(policy, keys, obs.shape[1], lr)}
        buffer = rb.empty(k, len(obs), {"observation": (obs.shape[1:], np.float32), "action": (acs.shape[1:], np.float32)})
        buffer = rb.add(rb.compile_insert(buffer), buffer, [{"observation": obs, "action": acs}] * k)
        t = time.perf_counter()
        fit = compile_fit(policy, 100, steps, state["s"], buffer, keys)
        compile_s[name] = time.perf_counter() - t

        def run(fit=fit, state=state, keys=keys, buffer=buffer, k=k) -> float:
            def call() -> None:
                state["s"], metrics = fit(state["s"], buffer, keys)
                jax.block_until_ready(metrics)
            return k * steps / _common.timed(call)

        run()  # first call: allocations, caches
        variants[name] = run
    return variants, compile_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000, help="updates per timed call (an iteration's worth)")
    p.add_argument("--torch_steps", type=int, default=500, help="updates per timed PyTorch run")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--cpu_threads", type=int, default=1,
                   help="JAX's CPU thread pool, as the CLI sets it (default 1; 0: JAX's default, all cores)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/update_cpu<N>.json)")
    args = p.parse_args()
    if args.cpu_threads:
        from bcjax.run.perf import limit_cpu_threads

        limit_cpu_threads(args.cpu_threads)
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
        print("torch is not installed: skipping the PyTorch reference (pip install torch==2.13.0, the `bench` extra)")

    lr = 5e-3
    results = []
    for task, (obs_dim, act_dim) in SIZES.items():
        obs, acs = make_data(obs_dim, act_dim)
        variants, compile_s = jax_variants(obs, acs, args.steps, lr, args.seeds)
        if have_torch:
            variants = {**torch_variants(obs, acs, args.torch_steps, lr), **variants}
        rates = _common.interleaved(variants, args.rounds)
        torch_rate = _common.median(rates["PyTorch per step (homework update)"]) if have_torch else None
        for name, rs in rates.items():
            total = _common.median(rs)
            k = args.seeds if "vmap" in name else 1
            results.append({"task": task, "obs_dim": obs_dim, "act_dim": act_dim, "variant": name, "seeds": k,
                            "steps_per_s_total": total, "steps_per_s_per_seed": total / k, "rounds": rs,
                            "gflops": total * flops_per_step(obs_dim, act_dim) / 1e9,
                            "compile_s": compile_s.get(name), "vs_torch": total / torch_rate if torch_rate else None})

    peak = matmul_peak_gflops()
    print(f"\nGradient steps/s, batch 100, 2x64 tanh MLP (medians of {args.rounds} interleaved rounds; "
          f"JAX CPU threads: {args.cpu_threads or 'all'}; JAX 1024^2 matmul: {peak:.0f} GFLOP/s)\n")
    rows = [[r["task"], f'{r["obs_dim"]}->{r["act_dim"]}', r["variant"], r["steps_per_s_total"],
             r["steps_per_s_per_seed"], f'{r["gflops"]:.1f}', "" if r["compile_s"] is None else f'{r["compile_s"]:.2f}',
             "" if r["vs_torch"] is None else f'{r["vs_torch"]:.1f}x'] for r in results]
    _common.print_table(["task", "sizes", "variant", "steps/s total", "steps/s per seed", "matmul GFLOP/s",
                         "compile s", "vs torch"], rows)
    summary = {}
    for task in SIZES:
        by = {r["variant"]: r for r in results if r["task"] == task}
        scan, vm = by["JAX scan"], by[f"JAX vmap {args.seeds} seeds (scan)"]
        summary[task] = {"scan_vs_torch": scan["vs_torch"],
                         "vmap_total_vs_one_seed": vm["steps_per_s_total"] / scan["steps_per_s_total"]}
        print(f"{task}: scan = {scan['vs_torch'] and round(scan['vs_torch'], 1)}x torch (target >= 20x); "
              f"{args.seeds} seeds vmapped = {summary[task]['vmap_total_vs_one_seed']:.2f}x one seed's total "
              f"(target >= 1.5x)")
    _common.write_json(args.out or _common.RESULTS / f"update_cpu{args.cpu_threads}.json",
                       {"benchmark": "update", "machine": _common.machine(), "args": vars(args),
                        "matmul_peak_gflops": peak,
                        "results": results, "summary": summary})


if __name__ == "__main__":
    main()
