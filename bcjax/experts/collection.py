"""`scripts/collect_expert_data.py`: roll an expert out and write CS285-format expert data or a Minari dataset; prints the mean return.

    python scripts/collect_expert_data.py --env_name Hopper-v4 --n_traj 2 --output expert_data_Hopper-v4.pkl
    python scripts/collect_expert_data.py --env_name Hopper-v4 --n_traj 2 --minari bcjax/hopper/expert-v0
    python scripts/collect_expert_data.py --env_name Hopper-v4 --n_traj 2 --action_noise 0.3 -o dart.pkl  # DART
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bcjax.errors import BcjaxError, run_script
from bcjax.run.config import DEFAULT_ENV, check_seed
from bcjax.run.flags import flag, parse


@dataclass(frozen=True)
class CollectArgs:
    """Roll an expert out and write CS285-format expert data or a Minari dataset."""

    PROG: ClassVar[str] = "collect_expert_data.py"
    env_name: str = flag(DEFAULT_ENV, "gymnasium task id", "-env")
    expert_policy_file: str | None = flag(None, "CS285 expert .pkl; unset: the bundled expert for the task", "-epf")
    n_traj: int = flag(2, "number of whole episodes")
    ep_len: int | None = flag(None, "max episode length; unset: the task's")
    seed: int = flag(1, "seed of the environment's resets")
    output: str | None = flag(None, "output .pkl; unset: data/expert_data/expert_data_<env>.pkl, or none with --minari",
                              "-o")
    minari: str | None = flag(None, "write a Minari dataset with this id, where Minari keeps local datasets "
                                    "(MINARI_DATASETS_PATH), instead of the default .pkl", metavar="DATASET_ID")
    no_save: bool = flag(False, "only report the returns (evaluate an expert)")
    action_noise: float = flag(0.0, "DART (Laskey et al. 2017): the expert acts with Gaussian noise of this std added to "
                                    "its actions; the data records its noise-free actions at the states visited",
                               metavar="SIGMA")

    def __post_init__(self) -> None:
        if self.n_traj <= 0 or (self.ep_len is not None and self.ep_len <= 0):
            raise BcjaxError("--n_traj and --ep_len must be positive")
        if self.no_save and (self.output or self.minari):
            raise BcjaxError("--no_save writes nothing: drop it, or drop --output/--minari")
        if not self.action_noise >= 0:  # NaN fails too
            raise BcjaxError(f"--action_noise must be 0 or more, got {self.action_noise}")
        check_seed(self.seed)


def collect(ns: CollectArgs) -> int:
    out = Path(ns.output or f"data/expert_data/expert_data_{ns.env_name}.pkl")
    if not ns.no_save and out.is_dir():
        raise BcjaxError(f"--output {out} is a directory: give a file name such as {out / 'expert_data.pkl'}")
    from bcjax.acting.gl import check_mujoco_gl_setting

    check_mujoco_gl_setting()
    import numpy as np

    from bcjax.data.bundled import bundled_expert_path
    from bcjax.data.expert import load_expert
    from bcjax.data.expert_data import collect_expert_episodes, save_expert_data
    from bcjax.run.driver import check_expert, task_info

    if ns.minari:  # a bad or taken id fails before the rollouts
        from bcjax.data.minari import check_new_dataset_id, save_minari

        check_new_dataset_id(ns.minari)
    epf = ns.expert_policy_file or bundled_expert_path(ns.env_name)
    expert = load_expert(epf).for_task(ns.env_name)
    info = task_info(ns.env_name)
    check_expert(expert, info, np.zeros((1, info.obs_dim), np.float32))
    actor, rng = expert.mean_action_np, np.random.default_rng(ns.seed)
    if ns.action_noise:  # noisy actions drive the env; the labels are the expert's own (DART)
        actor = lambda obs: expert.mean_action_np(obs) + ns.action_noise * rng.standard_normal((len(obs), info.act_dim))  # noqa: E731
    paths, terminated = collect_expert_episodes(actor, ns.env_name, ns.n_traj, ns.seed, ns.ep_len)
    for p in paths if ns.action_noise else []:
        p["action"] = expert.mean_action_np(p["observation"]).astype(np.float32)
    returns = np.array([p["reward"].sum() for p in paths])
    noted = f" (action noise {ns.action_noise})" if ns.action_noise else ""
    print(f"{ns.env_name}: {len(paths)} trajectories{noted}, {sum(len(p['reward']) for p in paths)} steps, "
          f"return {returns.mean():.1f} ± {returns.std():.1f} (min {returns.min():.1f}, max {returns.max():.1f})")
    if ns.minari:
        where = save_minari(paths, terminated, ns.minari, ns.env_name, epf, ns.seed)
        print(f"wrote Minari dataset {ns.minari} ({where}); train on it with --expert_data minari:{ns.minari}")
    if not ns.no_save and (ns.output or not ns.minari):
        save_expert_data(paths, out)
        print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(lambda: collect(parse(CollectArgs, argv)))

