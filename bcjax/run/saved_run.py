"""A run directory's checkpoints: the policy per iteration, the resume state, and loading them back
(and the config a resumed run continues with).

    <run_dir>/checkpoints/<itr>/  the K-stacked TrainState + metadata (config, dims): every iteration
                                  with --save_params, else the final one; read by scripts/evaluate.py
    <run_dir>/resume/<itr>/       everything the loop carries between iterations (TrainState, buffer,
                                  JAX keys, env step counts, elapsed time); the latest two are kept
                                  (the older one is the fallback if the newer is found corrupt), so a
                                  long run does not store its buffer once per iteration

Both are orbax step folders, written to a temporary name and renamed when
complete: a run killed during a save still has the previous step readable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from bcjax.core.buffer import Buffer
from bcjax.core.model import MLPPolicy
from bcjax.errors import BcjaxError
from bcjax.run.checkpoint import checkpoint_steps, restore_checkpoint, restore_meta, save_checkpoint, step_problem
from bcjax.run.config import RESUME_RUNTIME_FLAGS, Config, config_from_dict

POLICY_DIR = "checkpoints"
RESUME_DIR = "resume"


@dataclass
class LoopState:
    """What the training loop carries from one iteration to the next."""

    iteration: int  # the last completed iteration
    states: TrainState  # K-stacked
    loop_keys: jax.Array  # (K, 2) raw uint32 JAX keys (PRNGKey) the next iteration splits
    buffer: Buffer  # K-stacked, on the device
    envsteps: np.ndarray  # (K,) env steps collected so far
    elapsed: float  # seconds of training before this point, so TimeSinceStart continues


def save_policy(run_dir: str | Path, itr: int, states: TrainState, meta: dict) -> None:
    save_checkpoint(Path(run_dir) / POLICY_DIR, itr, {"train_state": states}, {**meta, "iteration": itr})


def _resume_tree(loop: LoopState) -> dict:
    return {"train_state": loop.states, "loop_keys": loop.loop_keys,
            "envsteps": np.asarray(loop.envsteps, np.int64), "buffer": loop.buffer}


def save_resume(run_dir: str | Path, loop: LoopState, meta: dict) -> None:
    save_checkpoint(Path(run_dir) / RESUME_DIR, loop.iteration, _resume_tree(loop),
                    {**meta, "iteration": loop.iteration, "elapsed": loop.elapsed}, max_to_keep=2)


def restore_resume(run_dir: str | Path, template: LoopState, step: int | None = None) -> LoopState:
    """The saved loop state (of iteration `step`, default the latest), restored into freshly built
    structures of the same shapes."""
    # Host templates for the keys and the buffer: orbax then restores the saved shapes, checked below
    # (a device template of another shape fails inside orbax's async machinery, noisily).
    tree = {**_resume_tree(template), "loop_keys": np.asarray(template.loop_keys),
            "buffer": jax.tree.map(np.asarray, template.buffer)}
    misfit = f"cannot resume from {run_dir}: its saved state does not fit this configuration"
    out, meta = restore_checkpoint(Path(run_dir) / RESUME_DIR, tree, step, "--resume_step", misfit)
    # orbax restores the saved shapes whatever the template says: check them.
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(out)):
        if np.shape(want) != np.shape(got):
            raise BcjaxError(f"{misfit} ({jax.tree_util.keystr(path)}: saved {np.shape(got)}, "
                             f"expected {np.shape(want)})")
    return LoopState(int(meta["iteration"]), out["train_state"], jnp.asarray(out["loop_keys"]),
                     jax.tree.map(jnp.asarray, out["buffer"]), np.asarray(out["envsteps"], np.int64), float(meta["elapsed"]))


def read_run_config(run_dir: str | Path) -> Config:
    """The config a run was started with: its config.json, else (a torn or lost one) the copy in its
    latest readable checkpoint."""
    path = Path(run_dir) / "config.json"
    try:
        return config_from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        pass
    for sub in (RESUME_DIR, POLICY_DIR):
        for step in reversed(checkpoint_steps(Path(run_dir) / sub)):
            try:
                return config_from_dict(restore_meta(Path(run_dir) / sub, step)[1]["config"])
            except (BcjaxError, KeyError, TypeError):
                continue
    if not path.is_file():
        raise BcjaxError(f"{run_dir} is not a bcjax run directory (no config.json)")
    raise BcjaxError(f"{path} is damaged (not valid JSON) and no checkpoint holds a copy: the run cannot be resumed")


def resume_config(run_dir: str | Path, explicit: dict) -> Config:
    """The saved config of `run_dir`, set to resume after its last saved iteration; `explicit`: the fields
    the flags gave (only those marked resumable in Config may be)."""
    run_dir = Path(run_dir)
    cfg, saves = read_run_config(run_dir), run_dir / RESUME_DIR
    other = sorted(set(explicit) - set(RESUME_RUNTIME_FLAGS))
    if other:
        raise BcjaxError(f"--resume continues {run_dir} with its saved configuration: drop "
                         + ", ".join(f"--{k}" for k in other))
    steps = checkpoint_steps(saves)
    if not steps:
        if not cfg.save_params:
            raise BcjaxError(f"{run_dir} has no resume state (it was trained without --save_params); "
                             "its final policy can still be evaluated with scripts/evaluate.py")
        raise BcjaxError(f"{run_dir} has no complete resume state: it was stopped before or during its first "
                         "save (iteration 0); start the run again")
    last = explicit.get("resume_step", steps[-1])
    if last not in steps:
        raise BcjaxError(f"--resume_step {last}: {saves} holds iterations {steps}")
    problem = step_problem(saves, last)
    if problem is not None:
        older = [s for s in steps if s < last and step_problem(saves, s) is None]
        hint = (f"resume from iteration {older[-1]} with --resume_step {older[-1]}" if older
                else "no intact resume state is left; start the run again")
        raise BcjaxError(f"the resume state of iteration {last} in {saves} is corrupt ({problem}): {hint}")
    if last >= cfg.n_iter - 1:
        raise BcjaxError(f"{run_dir} already finished all {cfg.n_iter} iterations: nothing to resume")
    return cfg.replace(**{**explicit, "resume": str(run_dir), "resume_step": last})


@dataclass
class SavedPolicy:
    policy: MLPPolicy
    states: TrainState  # K-stacked
    meta: dict
    iteration: int
    config: Config

    def params(self, seed_index: int = 0) -> Any:
        return jax.tree.map(lambda x: x[seed_index], self.states.params)


def load_policy(run_dir: str | Path, step: int | None = None) -> SavedPolicy:
    """The policy saved at iteration `step` (default: the latest), parameters bit-identical."""
    from bcjax.core.update import create_train_states

    ckpt = Path(run_dir) / POLICY_DIR
    if not Path(run_dir).is_dir():
        raise BcjaxError(f"no run directory {run_dir}")
    step, meta = restore_meta(ckpt, step)
    try:
        cfg = config_from_dict(meta["config"])
    except (KeyError, TypeError) as e:
        raise BcjaxError(f"checkpoint step {step} in {ckpt} has unusable metadata ({e}): pick another --step") from None
    policy = MLPPolicy(act_dim=int(meta["act_dim"]), n_layers=cfg.n_layers, size=cfg.size,
                       activation=cfg.activation, discrete=bool(meta["discrete"]), normalize_obs=cfg.normalize_obs)
    keys = jnp.stack([jax.random.PRNGKey(k) for k in range(int(meta["num_seeds"]))])
    # Shapes only (initializing real parameters to overwrite them costs ~1 s), placed on this
    # machine's default device: the saved sharding names the devices of the machine that trained.
    shapes = jax.eval_shape(lambda k: create_train_states(policy, k, int(meta["obs_dim"]), cfg.learning_rate), keys)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)
    out, meta = restore_checkpoint(ckpt, {"train_state": template}, step, misfit=f"checkpoint step {step} in {ckpt} "
                                   "does not hold the policy its metadata describes")
    return SavedPolicy(policy, out["train_state"], meta, step, cfg)
