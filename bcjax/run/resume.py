"""What a resumed run continues with: its saved config, plus only the flags that change how it runs
(the fields marked resumable in `bcjax.run.config.Config`)."""

from __future__ import annotations

from pathlib import Path

from bcjax.errors import BcjaxError
from bcjax.run.checkpoint import checkpoint_steps, step_problem
from bcjax.run.config import RESUME_RUNTIME_FLAGS, Config
from bcjax.run.saved_run import RESUME_DIR, read_run_config


def resume_config(run_dir: str | Path, explicit: dict) -> Config:
    """The saved config of `run_dir`, set to resume after its last saved iteration; `explicit`: the fields
    the flags gave (only the resumable ones may be)."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    other = sorted(set(explicit) - set(RESUME_RUNTIME_FLAGS))
    if other:
        raise BcjaxError(f"--resume continues {run_dir} with its saved configuration: drop "
                         + ", ".join(f"--{k}" for k in other))
    steps = checkpoint_steps(run_dir / RESUME_DIR)
    if not steps:
        if not cfg.save_params:
            raise BcjaxError(f"{run_dir} has no resume state (it was trained without --save_params); "
                             "its final policy can still be evaluated with scripts/evaluate.py")
        raise BcjaxError(f"{run_dir} has no complete resume state: it was stopped before or during its first "
                         "save (iteration 0); start the run again")
    last = explicit.get("resume_step", steps[-1])
    if last not in steps:
        raise BcjaxError(f"--resume_step {last}: {run_dir / RESUME_DIR} holds iterations {steps}")
    problem = step_problem(run_dir / RESUME_DIR, last)
    if problem is not None:
        older = [s for s in steps if s < last and step_problem(run_dir / RESUME_DIR, s) is None]
        hint = (f"resume from iteration {older[-1]} with --resume_step {older[-1]}" if older
                else "no intact resume state is left; start the run again")
        raise BcjaxError(f"the resume state of iteration {last} in {run_dir / RESUME_DIR} is corrupt ({problem}): {hint}")
    if last >= cfg.n_iter - 1:
        raise BcjaxError(f"{run_dir} already finished all {cfg.n_iter} iterations: nothing to resume")
    keep = {k: v for k, v in explicit.items() if k not in ("resume", "resume_step")}
    return cfg.replace(resume=str(run_dir), resume_step=last, **keep)
