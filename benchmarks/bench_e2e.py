#!/usr/bin/env python
"""End to end: a 10-iteration DAgger run on Hopper-v4, homework defaults, --eval_batch_size 5000.

Each run is the real command in a fresh process, so start-up (imports, expert
loading) and JIT compilation count; runs alternate between the variants:

- bcjax: `scripts/train.py --algo dagger -n 10 ...` with bcjax's defaults; its
  own timing line gives compile, collection, relabel, training, evaluation,
  logging; start-up = wall - the run's total; peak RSS from the OS.
- bcjax, warm compile cache: the same with JAX's persistent compilation cache
  filled by an earlier run (JAX_COMPILATION_CACHE_DIR), what a re-run costs.
- PyTorch homework: the solved CS285 hw1 pipeline re-created here in compact
  form (same env, expert data, flags; per-step torch policy in rollouts, the
  torch expert relabelling, MLPPolicySL.update with the homework's sampler,
  tensorboardX scalars), torch on one thread. Needs the `bench` extra
  (torch==2.13.0); skipped with a notice without it.

    python benchmarks/bench_e2e.py [--runs 3] [--env Hopper-v4] [--no_torch]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

SHARED = _common.ROOT.parent / "shared" / "cs285"
FILES = {"Hopper-v4": ("Hopper.pkl", "expert_data_Hopper-v4.pkl"),
         "Ant-v4": ("Ant.pkl", "expert_data_Ant-v4.pkl"),
         "HalfCheetah-v4": ("HalfCheetah.pkl", "expert_data_HalfCheetah-v4.pkl")}
QUOTED_PYTORCH_S = {"Hopper-v4": 60.0, "Ant-v4": 68.5, "HalfCheetah-v4": 51.0}  # the quiet-machine figures
PHASES = ("startup", "compile", "collection", "relabel", "training", "evaluation", "logging", "other")


def run_process(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stdout of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=_common.ROOT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return wall, usage.ru_maxrss / 1024, out


def bcjax_run(args: argparse.Namespace, logdir: str, cache: str | None) -> dict:
    expert, data = FILES[args.env]
    cmd = [sys.executable, "scripts/train.py", "--algo", "dagger", "-n", "10", "--env_name", args.env,
           "-epf", str(SHARED / "experts" / expert), "-ed", str(SHARED / "expert_data" / data),
           "--video_log_freq", "-1", "--eval_batch_size", "5000", "--logdir", logdir, "--quiet", *args.bcjax_args]
    env = dict(os.environ)
    if cache:  # cache every compiled program, however quick to compile
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    wall, rss, out = run_process(cmd, env)
    line = next(x for x in out.splitlines() if x.startswith("time (s):"))
    times = {k: float(v) for k, v in re.findall(r"(\w+) (\d+\.\d+)", line.split(";")[0])}
    return split(wall, rss, times, out)


def torch_run(args: argparse.Namespace, logdir: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--torch_worker", "--env", args.env, "--logdir", logdir]
    wall, rss, out = run_process(cmd)
    times = json.loads(out.strip().splitlines()[-1])
    return split(wall, rss, times, out)


def split(wall: float, rss: float, times: dict, out: str) -> dict:
    phases = {p: times.get(p, 0.0) for p in PHASES if p not in ("startup", "other")}
    phases["logging"] += times.get("checkpoint", 0.0)  # saving the final policy
    phases["startup"] = wall - times["total"]
    phases["other"] = times["total"] - sum(v for k, v in phases.items() if k != "startup")
    returns = [float(x) for x in re.findall(r"eval (-?\d+\.\d+)", out)]
    return {"wall_s": wall, "peak_rss_mib": rss, "phases": phases, "final_eval_return": returns[-1] if returns else None}


# ---------------------------------------------------------------- the PyTorch homework, in a worker process


def torch_worker(env_name: str, logdir: str) -> None:
    """The CS285 hw1 DAgger loop (run_hw1.py -> RL_Trainer -> MLPPolicySL), homework defaults."""
    import pickle

    import gymnasium as gym
    import numpy as np
    import torch
    from tensorboardX import SummaryWriter
    from torch import nn
    from torch_homework import MLPPolicySL, from_numpy, to_numpy

    from bcjax.envs import TASK_KWARGS  # gymnasium only; the task's kwargs, as the homework sets them

    t_start = time.time()  # imports count as start-up, as bcjax's do
    torch.set_num_threads(1)
    torch.manual_seed(1)
    np.random.seed(1)
    timings = dict.fromkeys(("collection", "relabel", "training", "evaluation", "logging"), 0.0)
    expert_file, data_file = FILES[env_name]

    class LoadedGaussianPolicy(nn.Module):  # cs285/policies/loaded_gaussian_policy.py: the expert, in torch
        def __init__(self, path: Path) -> None:
            super().__init__()
            with open(path, "rb") as f:
                data = pickle.load(f)
            pol = data["GaussianPolicy"]
            norm = pol["obsnorm"]["Standardizer"]
            self.mean = from_numpy(norm["mean_1_D"])
            self.std = from_numpy(np.sqrt(np.maximum(0, norm["meansq_1_D"] - norm["mean_1_D"] ** 2)) + 1e-6)
            net = pol["hidden"]["FeedforwardNet"]
            affine = [net[k]["AffineLayer"] for k in sorted(net, key=lambda k: int(k.split("_")[-1]))]
            self.hidden = nn.ModuleList(self._linear(a) for a in affine)
            self.out = self._linear(pol["out"]["AffineLayer"])
            self.act = torch.tanh if data["nonlin_type"] == "tanh" else nn.functional.leaky_relu

        @staticmethod
        def _linear(affine: dict) -> nn.Linear:
            layer = nn.Linear(*affine["W"].shape)
            layer.weight.data, layer.bias.data = from_numpy(affine["W"].T.copy()), from_numpy(affine["b"].ravel())
            return layer

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            h = (obs - self.mean) / self.std
            for layer in self.hidden:
                h = self.act(layer(h))
            return self.out(h)

        def get_action(self, obs: np.ndarray) -> np.ndarray:
            obs = obs if obs.ndim > 1 else obs[None]
            with torch.no_grad():
                return to_numpy(self(from_numpy(obs.astype(np.float32))))

    def sample_trajectory(env, policy, max_path_length: int) -> dict:  # cs285/infrastructure/utils.py
        ob, _ = env.reset()
        obs, acs, rewards, next_obs, terminals = [], [], [], [], []
        steps = 0
        while True:
            ac = policy.get_action(ob)[0]
            next_ob, rew, terminated, truncated, _ = env.step(ac)
            steps += 1
            rollout_done = terminated or truncated or steps >= max_path_length
            obs.append(ob)
            acs.append(ac)
            rewards.append(rew)
            next_obs.append(next_ob)
            terminals.append(rollout_done)
            ob = next_ob
            if rollout_done:
                break
        return {"observation": np.array(obs, dtype=np.float32), "action": np.array(acs, dtype=np.float32),
                "reward": np.array(rewards, dtype=np.float32), "next_observation": np.array(next_obs, dtype=np.float32),
                "terminal": np.array(terminals, dtype=np.float32)}

    def sample_trajectories(env, policy, min_timesteps: int, max_path_length: int) -> tuple[list, int]:
        paths, timesteps = [], 0
        while timesteps < min_timesteps:
            paths.append(sample_trajectory(env, policy, max_path_length))
            timesteps += len(paths[-1]["reward"])
        return paths, timesteps

    class ReplayBuffer:  # cs285/infrastructure/replay_buffer.py
        def __init__(self, max_size: int = 1_000_000) -> None:
            self.max_size, self.obs, self.acs = max_size, None, None

        def add_rollouts(self, paths: list) -> None:
            obs = np.concatenate([p["observation"] for p in paths])
            acs = np.concatenate([p["action"] for p in paths])
            self.obs = obs[-self.max_size:] if self.obs is None else np.concatenate([self.obs, obs])[-self.max_size:]
            self.acs = acs[-self.max_size:] if self.acs is None else np.concatenate([self.acs, acs])[-self.max_size:]

        def sample_random_data(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
            rand_indices = np.random.permutation(self.obs.shape[0])[:batch_size]
            return self.obs[rand_indices], self.acs[rand_indices]

    env = gym.make(env_name, **TASK_KWARGS.get(env_name, {}))
    env.reset(seed=1)
    ep_len = env.spec.max_episode_steps
    expert = LoadedGaussianPolicy(SHARED / "experts" / expert_file)
    policy = MLPPolicySL(env.action_space.shape[0], env.observation_space.shape[0])
    buffer = ReplayBuffer()
    writer = SummaryWriter(logdir)
    with open(SHARED / "expert_data" / data_file, "rb") as f:
        expert_paths = pickle.load(f)  # the homework unpickles it as is
    env_steps = 0
    for itr in range(10):
        t = time.time()
        if itr == 0:
            paths, steps = expert_paths, 0
        else:
            paths, steps = sample_trajectories(env, policy, 1000, ep_len)
        env_steps += steps
        timings["collection"] += time.time() - t
        if itr > 0:
            t = time.time()
            for p in paths:
                p["action"] = expert.get_action(p["observation"])
            timings["relabel"] += time.time() - t
        buffer.add_rollouts(paths)
        t = time.time()
        logs = [policy.update(*buffer.sample_random_data(100)) for _ in range(1000)]
        timings["training"] += time.time() - t
        t = time.time()
        eval_paths, _ = sample_trajectories(env, policy, 5000, ep_len)
        timings["evaluation"] += time.time() - t
        t = time.time()
        eval_returns = [p["reward"].sum() for p in eval_paths]
        stats = {"Eval_AverageReturn": np.mean(eval_returns), "Eval_StdReturn": np.std(eval_returns),
                 "Train_AverageReturn": np.mean([p["reward"].sum() for p in paths]),
                 "Train_EnvstepsSoFar": env_steps, "TimeSinceStart": time.time() - t_start,
                 "Training Loss": float(logs[-1]["Training Loss"])}
        for k, v in stats.items():
            writer.add_scalar(k, v, itr)
        writer.flush()
        print(f"itr {itr} eval {stats['Eval_AverageReturn']:.1f}", flush=True)
        timings["logging"] += time.time() - t
    writer.close()
    timings["total"] = time.time() - t_start
    print(json.dumps(timings))


# ---------------------------------------------------------------- driver


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="Hopper-v4", choices=sorted(FILES))
    p.add_argument("--runs", type=int, default=3, help="runs per variant, alternating")
    p.add_argument("--no_torch", action="store_true", help="skip the PyTorch homework reference")
    p.add_argument("--bcjax_args", nargs=argparse.REMAINDER, default=[], help="extra flags for scripts/train.py")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/e2e_<env>.json)")
    p.add_argument("--torch_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--logdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.torch_worker:
        torch_worker(args.env, args.logdir)
        return
    if not (SHARED / "experts" / FILES[args.env][0]).is_file():
        raise SystemExit(f"needs the CS285 sample files in {SHARED}")
    have_torch = not args.no_torch
    if have_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            have_torch = False
            print("torch is not installed: skipping the PyTorch reference (pip install torch==2.13.0, the `bench` extra)")

    runs: dict[str, list[dict]] = {"bcjax": [], "bcjax, warm compile cache": []}
    if have_torch:
        runs["PyTorch homework (reference)"] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "jax-cache")
        bcjax_run(args, tmp, cache)  # fills the cache
        for i in range(args.runs):
            for name in runs:
                if name == "bcjax":
                    r = bcjax_run(args, tmp, None)
                elif name.startswith("bcjax"):
                    r = bcjax_run(args, tmp, cache)
                else:
                    r = torch_run(args, str(Path(tmp) / f"torch{i}"))
                print(f"{name}: {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB, "
                      f"final eval return {r['final_eval_return']}", flush=True)
                runs[name].append(r)

    def med(rs: list[dict], key: str, phase: str | None = None) -> float:
        return _common.median([r["phases"][phase] if phase else r[key] for r in rs])

    table = []
    for name, rs in runs.items():
        table.append({"variant": name, "wall_s": med(rs, "wall_s"), "peak_rss_mib": med(rs, "peak_rss_mib"),
                      "phases": {ph: med(rs, "", ph) for ph in PHASES}, "runs": rs})
    quoted = QUOTED_PYTORCH_S[args.env]
    print(f"\n{args.env}, DAgger, 10 iterations, homework defaults, --eval_batch_size 5000: seconds "
          f"(medians of {args.runs} runs, each a fresh process)\n")
    _common.print_table(["variant", "wall", *PHASES, "peak RSS MiB", "vs quoted 60 s"],
                        [[t["variant"], f"{t['wall_s']:.1f}", *(f"{t['phases'][ph]:.1f}" for ph in PHASES),
                          f"{t['peak_rss_mib']:.0f}", f"{quoted / t['wall_s']:.1f}x"] for t in table])
    bc = table[0]
    summary = {"speedup_vs_quoted_pytorch": quoted / bc["wall_s"], "peak_rss_mib": bc["peak_rss_mib"]}
    if have_torch:
        summary["speedup_vs_pytorch_reference"] = table[-1]["wall_s"] / bc["wall_s"]
    print(f"bcjax: {summary['speedup_vs_quoted_pytorch']:.1f}x faster than the quoted {quoted:.0f} s (target >= 4x)"
          + (f", {summary['speedup_vs_pytorch_reference']:.1f}x the PyTorch reference measured here" if have_torch
             else "") + f"; peak RSS {bc['peak_rss_mib']:.0f} MiB (target < 1024)")
    _common.write_json(args.out or _common.RESULTS / f"e2e_{args.env}.json",
                       {"benchmark": "e2e", "machine": _common.machine(), "args": vars(args),
                        "quoted_pytorch_s": quoted, "results": table, "summary": summary})


if __name__ == "__main__":
    main()
