"""Experts bcjax trained itself (SAC, exported in the CS285 expert format) and ships.

`experts.json` records, per task, the file, the training command, seed, env
steps, wall time and the mean ± std return over the evaluation episodes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bcjax.core.adapters import ADAPTERS, SAME_AS_V4, v4_task
from bcjax.errors import BcjaxError

EXPERTS_DIR = Path(__file__).resolve().parent.parent / "experts"  # the shipped .pkl files and experts.json


def bundled_records() -> dict[str, dict]:
    """Task id -> its record from experts.json (empty if none are shipped)."""
    path = EXPERTS_DIR / "experts.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def bundled_expert_path(env_name: str) -> Path:
    """The shipped expert .pkl for `env_name`; a one-line BcjaxError if there is none."""
    records = bundled_records()
    task = env_name if env_name in records else v4_task(env_name)  # a v4 expert serves its v5 task
    if task not in records:
        have = ", ".join(sorted(records)) or "none"
        also = ", ".join(t for t in SAME_AS_V4 + tuple(ADAPTERS) if v4_task(t) in records)
        raise BcjaxError(f"no bundled expert for {env_name} (bundled: {have}; also usable on {also}); "
                         "pass --expert_policy_file PATH")
    return EXPERTS_DIR / records[task]["file"]


# Expert data collected when --expert_data is absent: as many trajectories as
# the CS285 files hold, so BC stays clearly below the expert and DAgger has a job.
DEFAULT_EXPERT_TRAJECTORIES = 2


def cached_expert_data(expert: Callable[[np.ndarray], np.ndarray], expert_file: str | Path, env_name: str,
                       logdir: str | Path, seed: int, ep_len: int | None = None,
                       n_traj: int = DEFAULT_EXPERT_TRAJECTORIES) -> Path:
    """Expert data rolled out from `expert`, cached under <logdir>/expert_data/ (keyed by the
    expert file's contents, task, seed, ep_len and count) and announced; returns its path."""
    from bcjax.data.expert_data import collect_expert_paths, save_expert_data

    digest = hashlib.sha256(Path(expert_file).read_bytes()).hexdigest()[:10]
    name = f"expert_data_{env_name}_{digest}_n{n_traj}_s{seed}" + (f"_len{ep_len}" if ep_len else "") + ".pkl"
    path = Path(logdir) / "expert_data" / name
    if path.is_file():
        print(f"expert data: reusing {path} (collected earlier from {expert_file})")
        return path
    t0 = time.time()
    paths = collect_expert_paths(expert, env_name, n_traj, seed, ep_len)
    save_expert_data(paths, path)
    returns = np.array([p["reward"].sum() for p in paths])
    print(f"expert data: collected {n_traj} trajectories ({sum(len(p['reward']) for p in paths)} steps, "
          f"return {returns.mean():.1f} ± {returns.std():.1f}) from {expert_file} in {time.time() - t0:.1f} s -> {path}")
    return path
