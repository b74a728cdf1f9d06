"""Run directory, metrics (TensorBoard + JSONL + CSV) and the per-iteration terminal table.

Metrics arrive per seed (a list of K values per name); files keep the per-seed
series and the mean, TensorBoard shows the mean (and each seed when K > 1).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import numpy as np

from bcjax.data.files import append_line, write_atomic, write_failure
from bcjax.errors import BcjaxError
from bcjax.run.config import Config, config_dict
from bcjax.run.lock import RunLock

# The CS285 names, in the homework's print order.
METRICS = (
    "Eval_AverageReturn", "Eval_StdReturn", "Eval_MaxReturn", "Eval_MinReturn", "Eval_AverageEpLen",
    "Train_AverageReturn", "Train_StdReturn", "Train_MaxReturn", "Train_MinReturn", "Train_AverageEpLen",
    "Train_EnvstepsSoFar", "TimeSinceStart", "Training Loss", "Initial_DataCollection_AverageReturn",
    # bcjax's own, beside the NLL (continuous actions only): the mean-action MSE on the last minibatch and sigma.
    "Training MSE", "Policy_StdMean", "Policy_StdMin", "Policy_StdMax",
)
# Logged with --beta_schedule only: the expert's mixing probability and the share of collection steps it drove.
BETA_METRICS = ("Train_Beta", "Train_ExpertStepFraction")


def make_run_dir(cfg: Config) -> Path:
    """data/q1_<exp>_<env>_<dd-mm-YYYY_HH-MM-SS> (q2_ for DAgger), made unique if taken."""
    prefix = "q2" if cfg.is_dagger else "q1"
    stamp = time.strftime("%d-%m-%Y_%H-%M-%S")
    base = Path(cfg.logdir) / f"{prefix}_{cfg.exp_name}_{cfg.env_name}_{stamp}"
    base = base.with_name(base.name.replace("/", "-"))  # namespaced gymnasium ids (ALE/Pong-v5)
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:  # taken, maybe by a run started the same second
            path = base.with_name(f"{base.name}_{n}")
            n += 1
        except OSError as e:
            raise write_failure(path, e) from None


def write_config(run_dir: Path, cfg: Config) -> None:
    write_atomic(run_dir / "config.json", json.dumps(config_dict(cfg), indent=2) + "\n")


def read_jsonl_lines(path: Path) -> list[tuple[str, dict]]:
    """(line, row) for each complete row of a metrics.jsonl; a torn last line is dropped.

    A damaged line elsewhere is a BcjaxError: that is not what a kill or a full disk leaves.
    """
    lines = path.read_text(errors="replace").splitlines(keepends=True)
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            complete = line.endswith("\n") and isinstance(row, dict) and isinstance(row.get("Iteration"), int)
        except ValueError:
            complete = False
        if not complete:
            if i == len(lines) - 1:
                break  # torn by a kill or a full disk during the append
            raise BcjaxError(f"{path} line {i + 1} is damaged (not a metrics row): remove it or restore the file")
        out.append((line, row))
    return out


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl (without a torn last line)."""
    return [row for _, row in read_jsonl_lines(Path(run_dir) / "metrics.jsonl")]


def _csv_iteration(line: str, n_fields: int) -> int | None:
    """The iteration of a complete metrics.csv row, or None for a torn one."""
    if not line.endswith("\n"):
        return None
    row = next(csv.reader([line]), [])
    try:
        return int(row[0]) if len(row) == n_fields else None
    except ValueError:
        return None


def truncate_metrics(run_dir: str | Path, last_iteration: int) -> None:
    """Drop metric rows logged after `last_iteration` (the resumed run logs those iterations again),
    and a torn last line (what a kill or a full disk during an append leaves)."""
    run_dir = Path(run_dir)
    jsonl = run_dir / "metrics.jsonl"
    if jsonl.is_file():
        lines = jsonl.read_text(errors="replace").splitlines(keepends=True)
        kept = [line for line, row in read_jsonl_lines(jsonl) if row["Iteration"] <= last_iteration]
        if kept != lines:
            write_atomic(jsonl, "".join(kept))
    table = run_dir / "metrics.csv"
    if table.is_file():
        lines = table.read_text(errors="replace").splitlines(keepends=True)
        header = lines[:1] if lines and lines[0].endswith("\n") else []
        n_fields = len(next(csv.reader(header), []))
        kept = header + [x for x in lines[1:] if (i := _csv_iteration(x, n_fields)) is not None and i <= last_iteration]
        if kept != lines:
            write_atomic(table, "".join(kept))


@contextlib.contextmanager
def run_directory(cfg: Config, on_row: Callable[[dict, Path], None] | None = None,
                  print_fn: Callable[[str], None] = print) -> Iterator[RunLogger]:
    """The run's directory, locked for this process, and its logger: a new one (with config.json), or for
    --resume cfg.resume's, with the metrics after its saved iteration dropped (they are logged again). A new
    directory that logged nothing is removed again when the run fails with a clear error."""
    run_dir = Path(cfg.resume) if cfg.resume else make_run_dir(cfg)
    lock = RunLock(run_dir).acquire()
    try:
        if cfg.resume:
            truncate_metrics(run_dir, cfg.resume_step)
            print_fn(f"resuming {run_dir} after iteration {cfg.resume_step}")
        else:
            write_config(run_dir, cfg)
            print_fn(f"run directory: {run_dir}")
        try:
            logger = RunLogger(run_dir, print_fn, purge_step=cfg.resume_step + 1 if cfg.resume else None, on_row=on_row)
        except OSError as e:
            raise write_failure(run_dir, e) from None
        try:
            yield logger
        finally:
            logger.close()
    except BcjaxError:
        if not cfg.resume and not (run_dir / "metrics.jsonl").exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing was logged: leave no empty run directory
        raise
    finally:
        lock.release()


def _json_number(x: float) -> float | None:
    # JSON has no NaN or infinity: a non-finite metric is written as null.
    return x if np.isfinite(x) else None


def _summary_writer_class() -> type:
    """tensorboardX's SummaryWriter, imported only when a run logs, and without torch.

    tensorboardX imports torch whenever it is installed (over a second of start-up)
    only to accept torch tensors, which bcjax never logs; a None entry in
    sys.modules makes that import fail fast, and tensorboardX then uses numpy.
    """
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class RunLogger:
    """Writes one row per logged iteration to metrics.jsonl, metrics.csv and TensorBoard."""

    def __init__(self, run_dir: Path, print_fn=print, purge_step: int | None = None,
                 on_row: Callable[[dict, Path], None] | None = None):
        writer_class = _summary_writer_class()
        self.run_dir = Path(run_dir)
        self.on_row = on_row  # called with each logged row and the run directory (a sweep reports it to Ray Tune)
        # purge_step (a resumed run): TensorBoard hides the earlier events from that step on.
        self.writer = writer_class(str(self.run_dir), flush_secs=10, purge_step=purge_step)
        self.print = print_fn

    def log_iteration(self, itr: int, per_seed: dict[str, list[float]], extra: dict | None = None) -> dict:
        """Log one iteration; returns the JSONL row (means across seeds plus per-seed lists, and `extra`,
        e.g. every evaluation episode's return, as given)."""
        row: dict = {"Iteration": itr}
        for name, values in per_seed.items():
            row[name] = _json_number(float(np.mean(values)))
        row["per_seed"] = {k: [_json_number(float(x)) for x in v] for k, v in per_seed.items()}
        row.update(extra or {})
        append_line(self.run_dir / "metrics.jsonl", json.dumps(row, allow_nan=False))
        self._append_csv(itr, per_seed)
        k = len(next(iter(per_seed.values())))
        for name, values in per_seed.items():
            self.writer.add_scalar(name, float(np.mean(values)), itr)
            if k > 1:
                self.writer.add_scalar(f"{name}_SeedStd", float(np.std(values)), itr)
        self.writer.flush()
        self.print(format_table(itr, per_seed))
        if self.on_row is not None:
            self.on_row(row, self.run_dir)
        return row

    def _append_csv(self, itr: int, per_seed: dict[str, list[float]]) -> None:
        # One row per (iteration, seed): the long format plotting tools expect.
        path = self.run_dir / "metrics.csv"
        names = list(per_seed)
        out = io.StringIO()
        w = csv.writer(out)
        if not path.exists():
            w.writerow(["Iteration", "seed_index", *names])
        for s in range(len(per_seed[names[0]])):
            w.writerow([itr, s, *[per_seed[n][s] for n in names]])
        append_line(path, out.getvalue())  # one write: a kill tears at most the last row

    def close(self) -> None:
        self.writer.close()


def format_table(itr: int, per_seed: dict[str, list[float]]) -> str:
    """A readable two-column table; with several seeds each value is mean ± std."""
    lines = [f"---------- iteration {itr} ----------"]
    width = max(len(n) for n in per_seed)
    for name, values in per_seed.items():
        v = np.asarray(values, np.float64)
        cell = f"{v.mean():12.4f}" + (f" ± {v.std():.4f}" if len(v) > 1 else "")
        lines.append(f"{name:<{width}}  {cell}")
    return "\n".join(lines)
