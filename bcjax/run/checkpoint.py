"""Orbax checkpoints: a pytree (TrainState, buffers, RNG keys) plus a JSON metadata dict per step.

Orbax writes each step into a temporary folder and renames it when complete,
so a run killed during a save leaves the previous step readable; stale
temporary folders are removed. Each finished step also gets a checksum file of
its contents (CHECKSUM_FILE): a step whose files changed since (bit rot, a
truncated copy) is refused by name instead of restoring wrong numbers. A step
without the file (a kill between orbax's rename and the checksum) is complete
by orbax's rename and is accepted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from bcjax.data.files import write_atomic
from bcjax.errors import BcjaxError

CHECKSUM_FILE = "bcjax_sha256.json"
_TMP_MARK = ".orbax-checkpoint-tmp"


def first_line(e: BaseException) -> str:
    """What an exception says, as one short line (its type where it says nothing)."""
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def _manager(ckpt_dir: str | Path, max_to_keep: int | None = None) -> ocp.CheckpointManager:
    # A failed save logs a traceback per thread (30-50 on a full disk); bcjax reports it in one line.
    for name in ("absl", "orbax", "jax._src.distributed"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True)
    return ocp.CheckpointManager(Path(ckpt_dir).resolve(), options=options)


def remove_stale_tmp(ckpt_dir: str | Path) -> None:
    """Delete the temporary folders of saves that never finished."""
    d = Path(ckpt_dir)
    for p in d.iterdir() if d.is_dir() else []:
        if _TMP_MARK in p.name:
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
            mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
            mngr.wait_until_finished()
        write_atomic(step_dir / CHECKSUM_FILE, json.dumps(_digest(step_dir)))
    except Exception as e:  # noqa: BLE001 - orbax raises OSError, ValueError, XlaRuntimeError... for a failed write
        remove_stale_tmp(ckpt_dir)
        if step_dir.is_dir() and not (step_dir / CHECKSUM_FILE).is_file():
            shutil.rmtree(step_dir, ignore_errors=True)  # half-checked: not known intact
        intact = intact_steps(ckpt_dir)
        kept = f"the last complete checkpoint is step {intact[-1]}" if intact else "no earlier checkpoint exists"
        reason = first_line(e)
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


def _pick_step(ckpt_dir: str | Path, step: int | None, step_flag: str) -> int:
    steps = checkpoint_steps(ckpt_dir)
    if not steps:
        raise BcjaxError(f"no checkpoint in {ckpt_dir}: train with --save_params, or point at a run directory")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise BcjaxError(f"no checkpoint step {step} in {ckpt_dir}; available: {steps}")
    problem = step_problem(ckpt_dir, step)
    if problem is not None:
        others = [s for s in intact_steps(ckpt_dir) if s != step]
        hint = f"pick an intact one with {step_flag} {others[-1]} (intact: {others})" if others else "no intact step is left"
        raise BcjaxError(f"checkpoint step {step} in {ckpt_dir} is corrupt ({problem}): {hint}")
    return step


def _restore(ckpt_dir: str | Path, step: int | None, step_flag: str, template: Any, misfit: str | None
             ) -> tuple[int, dict]:
    step = _pick_step(ckpt_dir, step, step_flag)
    items = {} if template is None else {"state": ocp.args.StandardRestore(template)}
    try:
        with _manager(ckpt_dir) as mngr:
            return step, mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), **items))
    except Exception as e:  # noqa: BLE001 - a damaged step fails in orbax, tensorstore or json
        if template is None or not (Path(ckpt_dir) / str(step) / CHECKSUM_FILE).is_file():
            raise BcjaxError(f"checkpoint step {step} in {ckpt_dir} cannot be read ({type(e).__name__}: "
                             f"{first_line(e)}): it is corrupt or truncated; pick another step") from None
        if misfit is None:
            raise  # its files are as saved: the template does not fit (the caller says how)
        raise BcjaxError(f"{misfit} ({type(e).__name__}: {first_line(e)})") from None


def restore_meta(ckpt_dir: str | Path, step: int | None = None, step_flag: str = "--step") -> tuple[int, dict]:
    """The step and metadata of `step` (default: the latest), to rebuild a template before restoring."""
    step, out = _restore(ckpt_dir, step, step_flag, None, None)
    return step, dict(out["meta"])


def restore_checkpoint(ckpt_dir: str | Path, template: Any, step: int | None = None, step_flag: str = "--step",
                       misfit: str | None = None) -> tuple[Any, dict]:
    """Restore the pytree saved at `step` (default: the latest) into `template`'s structure.

    A corrupt step is a BcjaxError; an intact one that does not fit `template` raises orbax's error, or with
    `misfit` (what that means to the caller) a BcjaxError.
    """
    _, out = _restore(ckpt_dir, step, step_flag, template, misfit)
    return out["state"], dict(out["meta"])
