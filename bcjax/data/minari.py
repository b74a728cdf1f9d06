"""Minari datasets as CS285 expert data: one episode is one trajectory, both ways.

Minari stores T+1 observations per episode (the last is the final next_observation)
and separate terminations and truncations. A CS285 trajectory holds T observations,
their next_observations, and terminal = 1 on the last step of every rollout, however
it ended (the homework's `done or steps >= max_path_length`). Reading loses only the
termination/truncation distinction, which BC and DAgger never use; writing keeps it.
Arrays keep their dtypes both ways, so a round trip returns the same arrays.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np

from bcjax.acting.envs import EnvInfo, make_env
from bcjax.acting.rollout import Trajectory
from bcjax.data.safe_pickle import UNREADABLE, check_trajectory_count, describe, memory_budget, validate_paths
from bcjax.errors import BcjaxError

PREFIX = "minari:"
INSTALL = "pip install -e '.[minari]'"
FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")  # every Minari episode's


def import_minari() -> ModuleType:
    try:
        import minari
    except ImportError as e:
        raise BcjaxError(f"Minari datasets need the minari package ({e}): {INSTALL}") from None
    return minari


def _dataset_path(dataset_id: str, given: str) -> Path:
    """Where Minari keeps `dataset_id`, checked as Minari's writer checks ids: an id is not a path (no
    leading /, no ..), so it cannot name a folder outside MINARI_DATASETS_PATH."""
    minari = import_minari()
    try:
        minari.dataset.minari_dataset.parse_dataset_id(dataset_id)
    except (ValueError, TypeError):  # TypeError: no -vN version
        raise BcjaxError(f"{given} is not a Minari dataset id: use (namespace/)name-v(version), e.g. "
                         "bcjax/hopper/expert-v0 (a dataset directory is given as a path, without minari:)") from None
    return minari.storage.get_dataset_path(dataset_id)


def _data_dir(source: str) -> tuple[Path, str]:
    """The data folder behind `source` and how to name it in messages."""
    if source.startswith(PREFIX):
        dataset_id = source[len(PREFIX):]
        data_dir = _dataset_path(dataset_id, f"--expert_data {source!r}") / "data"
        if not (data_dir / "metadata.json").is_file():
            raise BcjaxError(f"no local Minari dataset {dataset_id} (looked in {data_dir.parent}): "
                             f"download it with `minari download {dataset_id}`, or set MINARI_DATASETS_PATH "
                             "to the folder that holds it")
        return data_dir, f"Minari dataset {dataset_id}"
    root = Path(source)
    data_dir = root / "data" if (root / "data" / "metadata.json").is_file() else root
    if not (data_dir / "metadata.json").is_file():
        raise BcjaxError(f"--expert_data {source} is a directory but not a Minari dataset (no data/metadata.json): "
                         "give a CS285 .pkl, a Minari dataset directory or minari:DATASET_ID")
    return data_dir, f"Minari dataset {source}"


def _check_spaces(meta: dict, where: str, info: EnvInfo | None) -> None:
    """Flat Box observations, Box or Discrete actions, and (given the task) the task's sizes, read from
    metadata.json's entries as they are: Minari would build a Box of any declared shape, and for a file
    without spaces the environment it names (running the entry point it gives)."""
    obs, act = json.loads(meta["observation_space"]), json.loads(meta["action_space"])
    if obs["type"] != "Box" or len(obs["shape"]) != 1:
        raise BcjaxError(f"{where} has a {obs['type']!r} observation space; bcjax trains on flat Box observations")
    discrete = act["type"] == "Discrete"
    if not (discrete or (act["type"] == "Box" and len(act["shape"]) == 1)):
        raise BcjaxError(f"{where} has a {act['type']!r} action space; bcjax needs flat Box or Discrete actions")
    if info is None:
        return
    recorded = f" (recorded on {json.loads(meta['env_spec'])['id']!r})" if meta.get("env_spec") else ""
    fix = "pick a dataset recorded on this task or the matching --env_name"
    if obs["shape"][0] != info.obs_dim:
        raise BcjaxError(f"{where}{recorded} has {obs['shape'][0]}-dim observations but {info.env_name} gives "
                         f"{info.obs_dim}: {fix}")
    size = act["n"] if discrete else act["shape"][0]
    if discrete != info.discrete or size != info.act_dim:
        kind = lambda d, n: f"{n} discrete actions" if d else f"{n}-dim actions"  # noqa: E731
        raise BcjaxError(f"{where}{recorded} has {kind(discrete, size)} but {info.env_name} takes "
                         f"{kind(info.discrete, info.act_dim)}: {fix}")


def _read_hdf5(file: Path, total: int, n: int, where: str) -> list[dict[str, np.ndarray]]:
    """The fields of episodes 0..n-1 of `file`, read only once the headers of all `total` episodes show
    Minari's fields as numeric arrays in this file (no soft or external link, external storage or
    virtual source) whose declared sizes, counted per episode as they would be read and with the chunk
    that decompression fills, fit the pickles' budget for this file."""
    import h5py

    declared = 0
    with h5py.File(file, "r") as f:
        for i in range(total):
            if not isinstance(f.get(f"episode_{i}", getlink=True), h5py.HardLink):
                raise BcjaxError(f"{where}'s metadata.json declares {total} episodes but it has no episode {i}: "
                                 "download it again")
            group = f[f"episode_{i}"]
            fields = {k: ds for k in FIELDS if isinstance(group.get(k, getlink=True), h5py.HardLink) and isinstance(
                ds := group[k], h5py.Dataset) and not ds.external and not ds.is_virtual and ds.dtype.kind in "biuf"}
            if missing := [k for k in FIELDS if k not in fields]:
                raise BcjaxError(f"{where}: episode {i} has no {', '.join(missing)} array (Minari episodes hold "
                                 f"{', '.join(FIELDS)}): download it again")
            declared += sum((math.prod(ds.shape or ()) + math.prod(ds.chunks or ())) * ds.dtype.itemsize
                            for ds in fields.values())
        if declared > (budget := memory_budget(size := file.stat().st_size)):
            raise BcjaxError(f"{where} was refused: its arrays declare {declared} bytes, more than the {budget} its "
                             f"{size} bytes allow (8 x the file + 4 MiB, as for pickles): download it again")
        return [{k: f[f"episode_{i}"][k][()] for k in FIELDS} for i in range(n)]


def trajectory_from_episode(ep: dict[str, np.ndarray], i: int) -> Trajectory:
    """Minari episode `i`'s fields as a CS285 trajectory, arrays in the dtypes the dataset stores."""
    obs, n = ep["observations"], len(ep["rewards"])
    if obs.shape[0] != n + 1:
        raise BcjaxError(f"Minari episode {i} has {obs.shape[0]} observations for {n} steps (expected {n + 1})")
    terminal = (np.arange(n) == n - 1).astype(np.float32)  # the episode ends here, terminated or truncated
    return {"observation": obs[:-1], "action": ep["actions"], "reward": ep["rewards"], "next_observation": obs[1:],
            "terminal": terminal, "image_obs": np.zeros((0,), np.uint8)}


def load_minari(source: str, n_traj: int | None = None, info: EnvInfo | None = None) -> list[Trajectory]:
    """The first `n_traj` (default all) episodes of a Minari dataset (HDF5, Minari's format by default and
    what `minari download` gets) as validated CS285 trajectories; with `info`, a dataset whose spaces do
    not fit that task is a BcjaxError. The files are untrusted input, read with h5py as Minari lays them
    out: a damaged or crafted dataset is one BcjaxError line."""
    data_dir, where = _data_dir(source)
    try:
        meta = json.loads((data_dir / "metadata.json").read_text())
        if meta["data_format"] != "hdf5":
            raise BcjaxError(f"{where} is stored as {meta['data_format']!r}; bcjax reads Minari's HDF5 datasets")
        _check_spaces(meta, where, info)
        total = int(meta["total_episodes"])
        check_trajectory_count(n_traj, total, where)
        episodes = _read_hdf5(data_dir / "main_data.hdf5", total, n_traj or total, where)
        paths = [trajectory_from_episode(ep, i) for i, ep in enumerate(episodes)]
    except ImportError as e:
        raise BcjaxError(f"{where} needs a storage package that is missing ({e}): {INSTALL}") from None
    except UNREADABLE as e:
        raise BcjaxError(f"{where} is not readable ({describe(e)}): download it again") from None
    return validate_paths(paths, where)


def check_new_dataset_id(dataset_id: str) -> Path:
    """Where a new Minari dataset `dataset_id` will go; a malformed or taken id is a BcjaxError."""
    path = _dataset_path(dataset_id, f"--minari {dataset_id!r}")
    if path.exists():
        raise BcjaxError(f"Minari dataset {dataset_id} already exists ({path}): pick another name or version, "
                         f"or delete it with `minari delete {dataset_id}`")
    return path


def save_minari(paths: list[Trajectory], terminated: list[bool], dataset_id: str, env_name: str,
                expert_file: str | Path, seed: int) -> Path:
    """Write trajectories as a new local Minari dataset (episode i ends in a termination iff
    `terminated[i]`, else a truncation), recording the env spec, the expert and its return."""
    path = check_new_dataset_id(dataset_id)
    minari = import_minari()
    env = make_env(env_name)  # with the task's kwargs, so the recorded spec rebuilds the same env
    env.close()
    buffers = []
    for i, (p, term) in enumerate(zip(paths, terminated, strict=True)):
        if not np.array_equal(p["next_observation"][:-1], p["observation"][1:]):
            raise BcjaxError(f"trajectory {i}'s next_observation is not its observation shifted by one step, "
                             "so Minari's T+1 observations cannot hold it")
        ends = np.arange(len(p["reward"])) == len(p["reward"]) - 1
        buffers.append(minari.data_collector.EpisodeBuffer(  # arrays as they are (a rollout's float32 observations stay float32)
            observations=np.concatenate([p["observation"], p["next_observation"][-1:]]),
            actions=np.asarray(p["action"]),
            rewards=np.asarray(p["reward"]),
            terminations=ends & term,
            truncations=ends & (not term),
        ))
    returns = np.array([p["reward"].sum() for p in paths], np.float64)
    digest = hashlib.sha256(Path(expert_file).read_bytes()).hexdigest()
    description = (f"{len(paths)} episodes of {env_name} by the expert {Path(expert_file).name} "
                   f"(sha256 {digest[:12]}) acting with its mean action; return {returns.mean():.1f} ± "
                   f"{returns.std():.1f}. Written by bcjax scripts/collect_expert_data.py.")
    with warnings.catch_warnings():  # Minari warns about every unset optional field (author, code link...)
        warnings.filterwarnings("ignore", category=UserWarning, module="minari")
        dataset = minari.create_dataset_from_buffers(
            dataset_id, buffers, env=env, eval_env=env.spec, algorithm_name="bcjax expert rollout (mean action)",
            description=description)
    dataset.storage.update_metadata({
        "expert_policy_file": str(expert_file),
        "expert_policy_sha256": digest,
        "expert_return_mean": float(returns.mean()),
        "expert_return_std": float(returns.std()),
        "collection_seed": seed,
    })
    return path
