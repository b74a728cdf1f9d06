"""Progress bars for the phases of an iteration, and the one-line iteration summary.

Bars are shown only on an interactive terminal and without --quiet; when off,
nothing is wrapped, so rollouts pay nothing for them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np


def bars_wanted(quiet: bool) -> bool:
    return not quiet and sys.stdout.isatty()


class Progress:
    """`with progress.phase("collect", total) as tick:` gives a bar (or a no-op) for one phase."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    @contextmanager
    def phase(self, desc: str, total: int, unit: str = "step") -> Iterator[Callable[[int], None]]:
        if not self.enabled:
            yield lambda n: None
            return
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stdout, dynamic_ncols=True)
        try:
            yield bar.update
        finally:
            bar.close()


def summary_line(itr: int, n_iter: int, row: dict[str, list[float]] | None, times: dict[str, float]) -> str:
    """`itr 3/10 | eval 1523.4 ± 12.1 (len 480) | train 998.2 | loss -2.13 | 4000 steps | 1.2 s (...)`."""
    parts = [f"itr {itr}/{n_iter - 1}"]
    if row is not None:
        def mean(name: str) -> float:
            return float(np.mean(row[name]))
        k = len(row["Eval_AverageReturn"])
        spread = np.std(row["Eval_AverageReturn"]) if k > 1 else mean("Eval_StdReturn")
        parts += [f"eval {mean('Eval_AverageReturn'):.1f} ± {spread:.1f} (len {mean('Eval_AverageEpLen'):.0f})",
                  f"train {mean('Train_AverageReturn'):.1f}", f"loss {mean('Training Loss'):.4g}",
                  f"{mean('Train_EnvstepsSoFar'):.0f} env steps"]
    total = sum(times.values())
    detail = ", ".join(f"{k} {v:.1f}" for k, v in times.items() if v >= 0.05)
    parts.append(f"{total:.1f} s" + (f" ({detail})" if detail else ""))
    return " | ".join(parts)
