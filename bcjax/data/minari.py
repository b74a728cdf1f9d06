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
import warnings
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import numpy as np

from bcjax.acting.envs import EnvInfo, make_env
from bcjax.acting.rollout import Trajectory
from bcjax.data.trajectories import check_trajectory_count, validate_paths
from bcjax.errors import BcjaxError

PREFIX = "minari:"
INSTALL = "pip install -e '.[minari]'"


def is_minari_source(source: str | Path) -> bool:
    """`minari:DATASET_ID`, or a dataset directory (Minari's layout), rather than a CS285 pickle."""
    return str(source).startswith(PREFIX) or Path(source).is_dir()


def import_minari() -> ModuleType:
    try:
        import minari
    except ImportError as e:
        raise BcjaxError(f"Minari datasets need the minari package ({e}): {INSTALL}") from None
    return minari


def _open(source: str) -> tuple[object, str]:
    """The MinariDataset behind `source` and how to name it in messages."""
    minari = import_minari()
    if source.startswith(PREFIX):
        dataset_id = source[len(PREFIX):]
        if not dataset_id:
            raise BcjaxError("--expert_data minari: needs a dataset id, e.g. minari:mujoco/hopper/expert-v0")
        data_dir = minari.storage.get_dataset_path(dataset_id) / "data"
        if not (data_dir / "metadata.json").is_file():
            raise BcjaxError(f"no local Minari dataset {dataset_id} (looked in {data_dir.parent}): "
                             f"download it with `minari download {dataset_id}`, or set MINARI_DATASETS_PATH "
                             "to the folder that holds it")
        where = f"Minari dataset {dataset_id}"
    else:
        root = Path(source)
        data_dir = root / "data" if (root / "data" / "metadata.json").is_file() else root
        if not (data_dir / "metadata.json").is_file():
            raise BcjaxError(f"--expert_data {source} is a directory but not a Minari dataset (no data/metadata.json): "
                             "give a CS285 .pkl, a Minari dataset directory or minari:DATASET_ID")
        where = f"Minari dataset {source}"
    try:
        return minari.MinariDataset(data_dir), where
    except ImportError as e:
        raise BcjaxError(f"{where} needs a storage package that is missing ({e}): {INSTALL}") from None
    except (ValueError, KeyError, OSError, AssertionError, TypeError) as e:
        raise BcjaxError(f"{where} is not readable ({type(e).__name__}: {e}); download it again") from None


def _check_spaces(dataset: object, where: str, info: EnvInfo | None) -> None:
    """Flat Box observations, Box or Discrete actions, and (given the task) the task's sizes."""
    obs_space, act_space = dataset.observation_space, dataset.action_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise BcjaxError(f"{where} has observation space {obs_space}; bcjax trains on flat Box observations")
    if not (isinstance(act_space, gym.spaces.Discrete) or (isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1)):
        raise BcjaxError(f"{where} has action space {act_space}; bcjax needs flat Box or Discrete actions")
    if info is None:
        return
    recorded = f" (recorded on {dataset.env_spec.id})" if dataset.env_spec is not None else ""
    fix = "pick a dataset recorded on this task or the matching --env_name"
    if obs_space.shape[0] != info.obs_dim:
        raise BcjaxError(f"{where}{recorded} has {obs_space.shape[0]}-dim observations but {info.env_name} gives "
                         f"{info.obs_dim}: {fix}")
    discrete = isinstance(act_space, gym.spaces.Discrete)
    size = int(act_space.n) if discrete else act_space.shape[0]
    if discrete != info.discrete or size != info.act_dim:
        kind = lambda d, n: f"{n} discrete actions" if d else f"{n}-dim actions"  # noqa: E731
        raise BcjaxError(f"{where}{recorded} has {kind(discrete, size)} but {info.env_name} takes "
                         f"{kind(info.discrete, info.act_dim)}: {fix}")


def trajectory_from_episode(ep: object) -> Trajectory:
    """One Minari EpisodeData as a CS285 trajectory, arrays in the dtypes the dataset stores."""
    obs = np.asarray(ep.observations)
    n = len(ep.rewards)
    if obs.shape[0] != n + 1:
        raise BcjaxError(f"Minari episode {ep.id} has {obs.shape[0]} observations for {n} steps (expected {n + 1})")
    terminal = np.zeros(n, np.float32)
    terminal[-1:] = 1  # the episode ends here, terminated or truncated
    return {
        "observation": obs[:-1],
        "action": np.asarray(ep.actions),
        "reward": np.asarray(ep.rewards),
        "next_observation": obs[1:],
        "terminal": terminal,
        "image_obs": np.zeros((0,), np.uint8),
    }


def load_minari(source: str, n_traj: int | None = None, info: EnvInfo | None = None) -> list[Trajectory]:
    """The first `n_traj` (default all) episodes of a Minari dataset as validated CS285 trajectories;
    with `info`, a dataset whose spaces do not fit that task is a BcjaxError."""
    dataset, where = _open(source)
    _check_spaces(dataset, where, info)
    total = dataset.total_episodes
    check_trajectory_count(n_traj, total, where)
    indices = dataset.episode_indices[: n_traj or total]
    paths = [trajectory_from_episode(ep) for ep in dataset.iterate_episodes(indices)]
    return validate_paths(paths, where)


def check_new_dataset_id(dataset_id: str) -> Path:
    """Where a new Minari dataset `dataset_id` will go; a malformed or taken id is a BcjaxError."""
    minari = import_minari()
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):  # TypeError: no -vN version
        raise BcjaxError(f"--minari {dataset_id!r} is not a Minari dataset id: use (namespace/)name-v(version), "
                         "e.g. bcjax/hopper/expert-v0") from None
    path = minari.storage.get_dataset_path(dataset_id)
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
    from minari.data_collector import EpisodeBuffer

    env = make_env(env_name)  # with the task's kwargs, so the recorded spec rebuilds the same env
    env.close()
    buffers = []
    for i, (p, term) in enumerate(zip(paths, terminated, strict=True)):
        if not np.array_equal(p["next_observation"][:-1], p["observation"][1:]):
            raise BcjaxError(f"trajectory {i}'s next_observation is not its observation shifted by one step, "
                             "so Minari's T+1 observations cannot hold it")
        ends = np.zeros(len(p["reward"]), bool)
        ends[-1] = True
        buffers.append(EpisodeBuffer(  # arrays as they are (a rollout's float32 observations stay float32)
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
