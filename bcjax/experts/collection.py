"""`scripts/collect_expert_data.py`: roll an expert out and write CS285-format expert data or a Minari dataset; prints the mean return.

    python scripts/collect_expert_data.py --env_name Hopper-v4 --n_traj 2 --output expert_data_Hopper-v4.pkl
    python scripts/collect_expert_data.py --env_name Hopper-v4 --n_traj 2 --minari bcjax/hopper/expert-v0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bcjax.errors import BcjaxError, run_script


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="collect_expert_data.py",
                                description="Roll an expert out and write CS285-format expert data or a Minari dataset.")
    a = p.add_argument
    a("--env_name", "-env", default="Hopper-v4", help="gymnasium task id")
    a("--expert_policy_file", "-epf", default=None, help="CS285 expert .pkl (default: the bundled expert for the task)")
    a("--n_traj", type=int, default=2, help="number of whole episodes")
    a("--ep_len", type=int, default=None, help="max episode length (default: the task's)")
    a("--seed", type=int, default=1)
    a("--output", "-o", default=None,
      help="output .pkl (default data/expert_data/expert_data_<env>.pkl; with --minari, only if given)")
    a("--minari", default=None, metavar="DATASET_ID",
      help="write a Minari dataset with this id, where Minari keeps local datasets (MINARI_DATASETS_PATH), "
           "instead of the default .pkl")
    a("--no_save", action="store_true", help="only report the returns (evaluate an expert)")
    return p


def collect(argv: list[str] | None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.n_traj <= 0 or (ns.ep_len is not None and ns.ep_len <= 0):
        raise BcjaxError("--n_traj and --ep_len must be positive")
    if ns.no_save and (ns.output or ns.minari):
        raise BcjaxError("--no_save writes nothing: drop it, or drop --output/--minari")
    from bcjax.run.config import check_seed

    check_seed(ns.seed)
    out = Path(ns.output or f"data/expert_data/expert_data_{ns.env_name}.pkl")
    if not ns.no_save and out.is_dir():
        raise BcjaxError(f"--output {out} is a directory: give a file name such as {out / 'expert_data.pkl'}")
    from bcjax.acting.gl import check_mujoco_gl_setting

    check_mujoco_gl_setting()
    import numpy as np

    from bcjax.acting.envs import env_info, make_env
    from bcjax.data.bundled import bundled_expert_path
    from bcjax.data.expert import load_expert
    from bcjax.data.expert_data import collect_expert_episodes, save_expert_data
    from bcjax.run.driver import check_expert

    if ns.minari:  # a bad or taken id fails before the rollouts
        from bcjax.data.minari import check_new_dataset_id, save_minari

        check_new_dataset_id(ns.minari)
    epf = ns.expert_policy_file or bundled_expert_path(ns.env_name)
    expert = load_expert(epf).for_task(ns.env_name)
    env = make_env(ns.env_name)
    info = env_info(env)
    env.close()
    check_expert(expert, info, np.zeros((1, info.obs_dim), np.float32))
    paths, terminated = collect_expert_episodes(expert, ns.env_name, ns.n_traj, ns.seed, ns.ep_len)
    returns = np.array([p["reward"].sum() for p in paths])
    lengths = [len(p["reward"]) for p in paths]
    print(f"{ns.env_name}: {len(paths)} trajectories, {sum(lengths)} steps, "
          f"return {returns.mean():.1f} ± {returns.std():.1f} (min {returns.min():.1f}, max {returns.max():.1f})")
    if ns.minari:
        where = save_minari(paths, terminated, ns.minari, ns.env_name, epf, ns.seed)
        print(f"wrote Minari dataset {ns.minari} ({where}); train on it with --expert_data minari:{ns.minari}")
    if not ns.no_save and (ns.output or not ns.minari):
        save_expert_data(paths, out)
        print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(lambda: collect(argv))

