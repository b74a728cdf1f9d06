"""Orbax checkpoints: a pytree (TrainState, buffers, RNG keys) plus a JSON metadata dict per step.

Orbax writes each step into a temporary folder and renames it when complete,
so a run killed during a save leaves the previous step readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from bcjax.errors import BcjaxError


def _manager(ckpt_dir: str | Path, max_to_keep: int | None = None) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(Path(ckpt_dir).resolve(), options=options)


def save_checkpoint(ckpt_dir: str | Path, step: int, state: Any, meta: dict, max_to_keep: int | None = None) -> None:
    """Save `state` (any pytree of arrays) and `meta` (JSON-able) as `step`; blocks until written."""
    mngr = _manager(ckpt_dir, max_to_keep)
    try:
        if step in mngr.all_steps():  # orbax silently refuses to overwrite a step
            mngr.delete(step)
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        mngr.wait_until_finished()
    finally:
        mngr.close()


def checkpoint_steps(ckpt_dir: str | Path) -> list[int]:
    if not Path(ckpt_dir).is_dir():
        return []
    mngr = _manager(ckpt_dir)
    try:
        return sorted(mngr.all_steps())
    finally:
        mngr.close()


def _pick_step(ckpt_dir: str | Path, step: int | None) -> int:
    steps = checkpoint_steps(ckpt_dir)
    if not steps:
        raise BcjaxError(f"no checkpoint in {ckpt_dir}: train with --save_params, or point at a run directory")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise BcjaxError(f"no checkpoint step {step} in {ckpt_dir}; available: {steps}")
    return step


def restore_meta(ckpt_dir: str | Path, step: int | None = None) -> tuple[int, dict]:
    """The metadata of `step` (default: the latest), to rebuild a template before restoring."""
    step = _pick_step(ckpt_dir, step)
    mngr = _manager(ckpt_dir)
    try:
        out = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return step, dict(out["meta"])
    finally:
        mngr.close()


def restore_checkpoint(ckpt_dir: str | Path, template: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restore the pytree saved at `step` (default: the latest) into `template`'s structure."""
    step = _pick_step(ckpt_dir, step)
    mngr = _manager(ckpt_dir)
    try:
        out = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()))
        return out["state"], dict(out["meta"])
    finally:
        mngr.close()
