"""Checkpoints: orbax step folders with checksums, and what a run directory keeps in them.

Orbax writes each step into a temporary folder and renames it when complete,
so a run killed during a save leaves the previous step readable; stale
temporary folders are removed. Each finished step also gets a checksum file of
its contents (CHECKSUM_FILE): a step whose files changed since (bit rot, a
truncated copy) is refused by name instead of restoring wrong numbers. A step
without the file (a kill between orbax's rename and the checksum) is complete
by orbax's rename and is accepted.

A run directory's checkpoints (and the config a resumed run continues with):

    <run_dir>/checkpoints/<itr>/  the K-stacked TrainState + metadata (config, dims): every iteration
                                  with --save_params, else the final one; read by scripts/evaluate.py
    <run_dir>/resume/<itr>/       everything the loop carries between iterations (TrainState, buffer,
                                  JAX keys, env step counts, elapsed time); the latest two are kept
                                  (the older one is the fallback if the newer is found corrupt), so a
                                  long run does not store its buffer once per iteration
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from bcjax.core.buffer import Buffer
from bcjax.core.mlp import merge_members
from bcjax.core.model import MLPPolicy, ensemble_policy
from bcjax.data.files import write_atomic
from bcjax.errors import BcjaxError
from bcjax.run.config import RESUME_RUNTIME_FLAGS, Config, config_from_dict

if TYPE_CHECKING:
    import orbax.checkpoint as ocp

CHECKSUM_FILE = "bcjax_sha256.json"
_TMP_MARK = ".orbax-checkpoint-tmp"
_LOOP_CLOSED = "Event loop is closed"
_NO_THREAD = "can't start new thread"  # CPython's RuntimeError when a thread or process limit is reached


def first_line(e: BaseException) -> str:
    """What an exception says, as one short line (its type where it says nothing)."""
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


@functools.cache
def _quiet_failed_saves() -> None:
    """A failed save (a full disk) is reported by bcjax in one line; orbax and asyncio would add a traceback
    per thread and per write: orbax's logs, the writes its closed event loop never collected ("Task exception
    was never retrieved", naming orbax's temporary folder) and tensorstore's late callbacks into that closed
    loop ("Event loop is closed", raised where nothing can catch it: unraisable). Only these are dropped."""
    for name in ("absl", "orbax", "jax._src.distributed"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").addFilter(lambda record: _TMP_MARK not in record.getMessage())
    previous = sys.unraisablehook

    def hook(u: Any) -> None:
        if not (u.object is None and isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == _LOOP_CLOSED):
            previous(u)
    sys.unraisablehook = hook


def orbax() -> Any:
    """orbax.checkpoint, imported when a run first saves or restores (~0.2 s; a run starts importing it
    aside while its first iteration collects, see the driver)."""
    import orbax.checkpoint as ocp

    return ocp


def _manager(ckpt_dir: str | Path, max_to_keep: int | None = None) -> ocp.CheckpointManager:
    _quiet_failed_saves()
    ocp = orbax()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True)
    return ocp.CheckpointManager(Path(ckpt_dir).resolve(), options=options)


def remove_stale_tmp(ckpt_dir: str | Path) -> None:
    """Delete the temporary folders of saves that never finished."""
    for p in Path(ckpt_dir).glob(f"*{_TMP_MARK}*"):
        shutil.rmtree(p, ignore_errors=True)


def _digest(step_dir: Path) -> dict[str, str]:
    out = {}
    for p in sorted(step_dir.rglob("*")):
        if p.is_file() and p.name != CHECKSUM_FILE:
            h = hashlib.sha256()
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            out[str(p.relative_to(step_dir))] = h.hexdigest()
    return out


def save_checkpoint(ckpt_dir: str | Path, step: int, state: Any, meta: dict, max_to_keep: int | None = None) -> None:
    """Save `state` (any pytree of arrays) and `meta` (JSON-able) as `step`; blocks until written.

    A failure (disk full, read-only) is one BcjaxError; the steps saved before stay intact.
    """
    step_dir = Path(ckpt_dir) / str(step)
    remove_stale_tmp(ckpt_dir)
    try:
        with _manager(ckpt_dir, max_to_keep) as mngr:
            if step in mngr.all_steps():  # orbax silently refuses to overwrite a step
                mngr.delete(step)
            args = orbax().args
            mngr.save(step, args=args.Composite(state=args.StandardSave(state), meta=args.JsonSave(meta)))
            mngr.wait_until_finished()
        write_atomic(step_dir / CHECKSUM_FILE, json.dumps(_digest(step_dir)))
    except Exception as e:  # noqa: BLE001 - orbax raises OSError, ValueError, XlaRuntimeError... for a failed write
        remove_stale_tmp(ckpt_dir)
        if step_dir.is_dir() and not (step_dir / CHECKSUM_FILE).is_file():
            shutil.rmtree(step_dir, ignore_errors=True)  # half-checked: not known intact
        intact = intact_steps(ckpt_dir)
        kept = f"the last complete checkpoint is step {intact[-1]}" if intact else "no earlier checkpoint exists"
        if _NO_THREAD in str(e):  # a pids or thread limit, not the disk
            warnings.filterwarnings("ignore", r"coroutine .* was never awaited", RuntimeWarning)  # (orbax's, unrun)
            raise BcjaxError(f"cannot save checkpoint step {step} in {ckpt_dir}: no new thread could be started "
                             f"({e}); {kept}: raise this process's thread limit (ulimit -u, the container's pids "
                             "limit) or use fewer --rollout_workers") from None
        errno = re.search(r"os_error_code='(\d+)'", str(e))  # tensorstore's OSError, inside a long message
        reason = os.strerror(int(errno[1])) if errno else first_line(e)
        if "RESOURCE_EXHAUSTED" in reason or "No space left" in reason or "ENOSPC" in reason:
            reason = "no space left on device"
        raise BcjaxError(f"cannot write checkpoint step {step} in {ckpt_dir}: {reason}; {kept}: "
                         "free space (or fix the path) and resume the run with --resume") from None


def checkpoint_steps(ckpt_dir: str | Path) -> list[int]:
    """The finished steps (orbax renamed them into place), intact or not."""
    d = Path(ckpt_dir)
    return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()) if d.is_dir() else []


def step_problem(ckpt_dir: str | Path, step: int) -> str | None:
    """Why `step` cannot be trusted, or None when its files match the checksums saved with it."""
    step_dir = Path(ckpt_dir) / str(step)
    if not (step_dir / CHECKSUM_FILE).is_file():
        return None
    try:
        want = json.loads((step_dir / CHECKSUM_FILE).read_text())
    except (OSError, ValueError):
        return "its checksum file is unreadable"
    got = _digest(step_dir)
    bad = sorted(set(want) ^ set(got) | {k for k in want if k in got and want[k] != got[k]})
    return f"its files differ from when it was saved ({', '.join(bad[:3])})" if bad else None


def intact_steps(ckpt_dir: str | Path) -> list[int]:
    return [s for s in checkpoint_steps(ckpt_dir) if step_problem(ckpt_dir, s) is None]


def _pick_step(ckpt_dir: str | Path, step: int | None, step_flag: str, what: str = "checkpoint step") -> int:
    """`step` (default: the latest), checked to exist and be intact; else one line offering an intact one."""
    steps = checkpoint_steps(ckpt_dir)
    if not steps:
        raise BcjaxError(f"no checkpoint in {ckpt_dir}: train with --save_params, or point at a run directory")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise BcjaxError(f"no {what} {step} in {ckpt_dir}; available: {steps}")
    problem = step_problem(ckpt_dir, step)
    if problem is not None:
        others = [s for s in intact_steps(ckpt_dir) if s != step]
        hint = f"pick an intact one with {step_flag} {others[-1]} (intact: {others})" if others else "no intact step is left"
        raise BcjaxError(f"{what} {step} in {ckpt_dir} is corrupt ({problem}): {hint}")
    return step


def restore_meta(ckpt_dir: str | Path, step: int | None = None, step_flag: str = "--step") -> tuple[int, dict]:
    """The step and metadata of `step` (default: the latest), to rebuild a template before restoring."""
    step = _pick_step(ckpt_dir, step, step_flag)
    return step, restore_checkpoint(ckpt_dir, None, step)[1]


def restore_checkpoint(ckpt_dir: str | Path, template: Any, step: int | None = None, step_flag: str = "--step",
                       misfit: str | None = None) -> tuple[Any, dict]:
    """Restore the pytree saved at `step` (default: the latest) into `template`'s structure (None: only the
    metadata), and its metadata.

    A corrupt step is a BcjaxError; an intact one that does not fit `template` raises orbax's error, or with
    `misfit` (what that means to the caller) a BcjaxError.
    """
    step = _pick_step(ckpt_dir, step, step_flag)
    ocp = orbax()
    items = {} if template is None else {"state": ocp.args.StandardRestore(template)}
    try:
        with _manager(ckpt_dir) as mngr:
            out = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), **items))
    except Exception as e:  # noqa: BLE001 - a damaged step fails in orbax, tensorstore or json
        if template is None or not (Path(ckpt_dir) / str(step) / CHECKSUM_FILE).is_file():
            raise BcjaxError(f"checkpoint step {step} in {ckpt_dir} cannot be read ({type(e).__name__}: "
                             f"{first_line(e)}): it is corrupt or truncated; pick another step") from None
        if misfit is None:
            raise  # its files are as saved: the template does not fit (the caller says how)
        raise BcjaxError(f"{misfit} ({type(e).__name__}: {first_line(e)})") from None
    return out.get("state"), dict(out["meta"])


# ---------------------------------------------------------------- a run directory's checkpoints

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
            raise BcjaxError(f"{misfit} ({jax.tree_util.keystr(path)}: saved {np.shape(got)}, expected {np.shape(want)})")
    return LoopState(int(meta["iteration"]), out["train_state"], jnp.asarray(out["loop_keys"]),
                     jax.tree.map(jnp.asarray, out["buffer"]), np.asarray(out["envsteps"], np.int64), float(meta["elapsed"]))


def read_run_config(run_dir: str | Path) -> Config:
    """The config a run was started with: its config.json, else (a torn or lost one) the copy in its
    latest readable checkpoint."""
    path = Path(run_dir) / "config.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        return config_from_dict(json.loads(path.read_text()))
    for sub in (RESUME_DIR, POLICY_DIR):
        for step in reversed(checkpoint_steps(Path(run_dir) / sub)):
            with contextlib.suppress(BcjaxError, KeyError, TypeError):
                return config_from_dict(restore_meta(Path(run_dir) / sub, step)[1]["config"])
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
        raise BcjaxError(f"--resume continues {run_dir} with its saved configuration: drop {', '.join('--' + k for k in other)}")
    if not checkpoint_steps(saves):
        if not cfg.save_params:
            raise BcjaxError(f"{run_dir} has no resume state (it was trained without --save_params); "
                             "its final policy can still be evaluated with scripts/evaluate.py")
        raise BcjaxError(f"{run_dir} has no complete resume state: it was stopped before or during its first "
                         "save (iteration 0); start the run again")
    last = _pick_step(saves, explicit.get("resume_step"), "--resume_step", "the resume state of iteration")
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

    def params(self, seed_index: int = 0) -> Any:  # an ensemble's members merged into the MLP that acts for them
        return jax.tree.map(lambda x: x[seed_index], merge_members(self.states.params, self.config.ensemble))


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
    keys = jnp.stack([jax.random.PRNGKey(k) for k in range(int(meta["num_seeds"]) * cfg.ensemble)])
    # Shapes only (initializing real parameters to overwrite them costs ~1 s), placed on this
    # machine's default device: the saved sharding names the devices of the machine that trained.
    shapes = jax.eval_shape(lambda k: create_train_states(policy, k, int(meta["obs_dim"]), *cfg.optimizer), keys)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)
    out, meta = restore_checkpoint(ckpt, {"train_state": template}, step, misfit=f"checkpoint step {step} in {ckpt} "
                                   "does not hold the policy its metadata describes")
    return SavedPolicy(ensemble_policy(policy, cfg.ensemble), out["train_state"], meta, step, cfg)
