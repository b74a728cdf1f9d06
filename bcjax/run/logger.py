"""Run directory (and its lock), metrics (TensorBoard + JSONL + CSV) and the per-iteration terminal lines.

Metrics arrive per seed (a list of K values per name); files keep the per-seed
series and the mean, TensorBoard shows the mean (and each seed when K > 1).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import itertools
import json
import os
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

# The CS285 names, in the homework's print order.
METRICS = ("Eval_AverageReturn", "Eval_StdReturn", "Eval_MaxReturn", "Eval_MinReturn", "Eval_AverageEpLen",
           "Train_AverageReturn", "Train_StdReturn", "Train_MaxReturn", "Train_MinReturn", "Train_AverageEpLen",
           "Train_EnvstepsSoFar", "TimeSinceStart", "Training Loss", "Initial_DataCollection_AverageReturn",
           # bcjax's own, beside the NLL (continuous actions only): the mean-action MSE on the last minibatch and sigma.
           "Training MSE", "Policy_StdMean", "Policy_StdMin", "Policy_StdMax")
# Logged with --beta_schedule only: the expert's mixing probability and the share of collection steps it drove.
BETA_METRICS = ("Train_Beta", "Train_ExpertStepFraction")


def make_run_dir(cfg: Config) -> Path:
    """data/q1_<exp>_<env>_<dd-mm-YYYY_HH-MM-SS> (q2_ for DAgger), made unique if taken."""
    name = f"{'q2' if cfg.is_dagger else 'q1'}_{cfg.exp_name}_{cfg.env_name}_{time.strftime('%d-%m-%Y_%H-%M-%S')}"
    path = base = Path(cfg.logdir) / name.replace("/", "-")  # ("/": namespaced gymnasium ids, ALE/Pong-v5)
    for n in itertools.count(1):
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:  # taken, maybe by a run started the same second
            path = base.with_name(f"{base.name}_{n}")
        except OSError as e:
            raise write_failure(path, e) from None
    raise AssertionError("unreachable")


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """One writer per run directory: an exclusive flock(2) on <run_dir>/lock, which names its holder's pid.
    The lock ends with the process that holds it: a lock file left by a killed run is simply taken over."""
    path = Path(run_dir) / "lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise write_failure(path, e) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise BcjaxError(f"{path.parent} is in use by process {owner} (another training run or --resume): "
                             "wait for it to finish or stop it, then try again") from None
        except OSError as e:
            raise write_failure(path, e) from None
        yield
    finally:
        os.close(fd)  # drops the flock; the file stays (an unlocked file is free)


def read_jsonl_lines(path: Path) -> list[tuple[str, dict]]:
    """(line, row) for each complete row of a metrics.jsonl; a torn last line is dropped.

    A damaged line elsewhere is a BcjaxError: that is not what a kill or a full disk leaves.
    """
    lines = path.read_text(errors="replace").splitlines(keepends=True)
    out = []
    for i, line in enumerate(lines):
        with contextlib.suppress(ValueError):
            row = json.loads(line) if line.endswith("\n") else None
            if isinstance(row, dict) and isinstance(row.get("Iteration"), int):
                out.append((line, row))
                continue
        if line.strip() and i < len(lines) - 1:  # (the last one: torn by a kill or a full disk during the append)
            raise BcjaxError(f"{path} line {i + 1} is damaged (not a metrics row): remove it or restore the file")
    return out


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl (without a torn last line)."""
    return [row for _, row in read_jsonl_lines(Path(run_dir) / "metrics.jsonl")]


def truncate_metrics(run_dir: str | Path, last_iteration: int) -> None:
    """Drop metric rows logged after `last_iteration` (the resumed run logs those iterations again),
    and a torn last line (what a kill or a full disk during an append leaves); metrics.csv is rebuilt from
    the rows kept."""
    jsonl, table = Path(run_dir) / "metrics.jsonl", Path(run_dir) / "metrics.csv"
    if jsonl.is_file():
        kept = [(line, row) for line, row in read_jsonl_lines(jsonl) if row["Iteration"] <= last_iteration]
        write_atomic(jsonl, "".join(line for line, _ in kept))
        write_atomic(table, "".join(_csv_rows(row["Iteration"], row["per_seed"], i == 0) for i, (_, row) in enumerate(kept)))


def _csv_rows(itr: int, per_seed: dict[str, list], header: bool) -> str:
    """metrics.csv's rows of an iteration: one per (iteration, seed), the long format plotting tools expect."""
    out = io.StringIO()
    table = csv.writer(out)
    if header:
        table.writerow(["Iteration", "seed_index", *per_seed])
    table.writerows([itr, s, *values] for s, values in enumerate(zip(*per_seed.values())))
    return out.getvalue()


@contextlib.contextmanager
def run_directory(cfg: Config, on_row: Callable[[dict, Path], None] | None = None,
                  print_fn: Callable[[str], None] = print) -> Iterator[RunLogger]:
    """The run's directory, locked for this process, and its logger: a new one (with config.json), or for
    --resume cfg.resume's, with the metrics after its saved iteration dropped (they are logged again). A new
    directory that logged nothing is removed again when the run fails with a clear error."""
    run_dir = Path(cfg.resume) if cfg.resume else make_run_dir(cfg)
    with run_lock(run_dir):
        try:
            if cfg.resume:
                truncate_metrics(run_dir, cfg.resume_step)
                print_fn(f"resuming {run_dir} after iteration {cfg.resume_step}")
            else:
                write_atomic(run_dir / "config.json", json.dumps(config_dict(cfg), indent=2) + "\n")
                print_fn(f"run directory: {run_dir}")
            try:
                logger = RunLogger(run_dir, print_fn, cfg.resume_step + 1 if cfg.resume else None, on_row)
            except OSError as e:
                raise write_failure(run_dir, e) from None
            with contextlib.closing(logger):
                yield logger
        except Exception:
            if not cfg.resume and not any((run_dir / n).exists() for n in ("metrics.jsonl", "checkpoints")):
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing logged or saved: leave no empty run directory
            raise


def _json_number(x: float) -> float | None:
    # JSON has no NaN or infinity: a non-finite metric is written as null.
    return x if np.isfinite(x) else None


def _summary_writer_class() -> type:
    """tensorboardX's SummaryWriter, imported only when a run logs, and without torch.

    tensorboardX imports torch whenever it is installed (over a second of start-up)
    only to accept torch tensors, which bcjax never logs; a None entry in
    sys.modules makes that import fail fast, and tensorboardX then uses numpy.
    """
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        from tensorboardX import SummaryWriter
    finally:
        if blocked:
            del sys.modules["torch"]
    return SummaryWriter


class RunLogger:
    """Writes one row per logged iteration to metrics.jsonl, metrics.csv and TensorBoard."""

    def __init__(self, run_dir: str | Path, print_fn: Callable[[str], None] = print, purge_step: int | None = None,
                 on_row: Callable[[dict, Path], None] | None = None) -> None:
        self.run_dir, self.print = Path(run_dir), print_fn
        self.on_row = on_row  # called with each logged row and the run directory (a sweep reports it to Ray Tune)
        # purge_step (a resumed run): TensorBoard hides the earlier events from that step on.
        self.writer = _summary_writer_class()(str(self.run_dir), flush_secs=10, purge_step=purge_step)

    def log_iteration(self, itr: int, per_seed: dict[str, list[float]], extra: dict | None = None) -> None:
        """Log one iteration: the JSONL row holds the means across seeds, the per-seed lists, and `extra`
        (e.g. every evaluation episode's return) as given."""
        row = {"Iteration": itr, **{k: _json_number(float(np.mean(v))) for k, v in per_seed.items()},
               "per_seed": {k: [_json_number(float(x)) for x in v] for k, v in per_seed.items()}, **(extra or {})}
        append_line(self.run_dir / "metrics.jsonl", json.dumps(row, allow_nan=False))
        table = self.run_dir / "metrics.csv"  # in one write, as the JSONL row: a kill tears at most the last row
        append_line(table, _csv_rows(itr, row["per_seed"], not (table.is_file() and table.stat().st_size)))
        for name, values in per_seed.items():
            self.writer.add_scalar(name, float(np.mean(values)), itr)
            if len(values) > 1:
                self.writer.add_scalar(f"{name}_SeedStd", float(np.std(values)), itr)
        self.writer.flush()
        self.print(format_table(itr, per_seed))
        if self.on_row is not None:
            self.on_row(row, self.run_dir)

    def close(self) -> None:
        self.writer.close()


def format_table(itr: int, per_seed: dict[str, list[float]]) -> str:
    """A readable two-column table; with several seeds each value is mean ± std."""
    lines = [f"---------- iteration {itr} ----------"]
    width = max(len(n) for n in per_seed)
    for name, values in per_seed.items():
        v = np.asarray(values, np.float64)
        lines.append(f"{name:<{width}}  {v.mean():12.4f}" + (f" ± {v.std():.4f}" if len(v) > 1 else ""))
    return "\n".join(lines)


def summary_line(itr: int, n_iter: int, row: dict[str, list[float]], times: dict[str, float]) -> str:
    """`itr 3/10 | eval 1523.4 ± 12.1 (len 480) | train 998.2 | loss -2.13 | 4000 env steps | 1.2 s (...)`."""
    def mean(name: str) -> float:
        return float(np.mean(row[name]))

    evals = row["Eval_AverageReturn"]
    spread = np.std(evals) if len(evals) > 1 else mean("Eval_StdReturn")
    detail = ", ".join(f"{k} {v:.1f}" for k, v in times.items() if v >= 0.05)
    return " | ".join([f"itr {itr}/{n_iter - 1}",
                       f"eval {mean('Eval_AverageReturn'):.1f} ± {spread:.1f} (len {mean('Eval_AverageEpLen'):.0f})",
                       f"train {mean('Train_AverageReturn'):.1f}", f"loss {mean('Training Loss'):.4g}",
                       f"{mean('Train_EnvstepsSoFar'):.0f} env steps",
                       f"{sum(times.values()):.1f} s" + (f" ({detail})" if detail else "")])
