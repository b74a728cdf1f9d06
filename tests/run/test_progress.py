"""Progress bars (TTY only, not with --quiet) and the one-line iteration summary."""

from __future__ import annotations

import io
import sys

import pytest

from bcjax.run.driver import progress
from bcjax.run.logger import summary_line


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("out, quiet, shown", [(_Tty, False, True), (_Tty, True, False), (io.StringIO, False, False)])
def test_bars_only_on_a_terminal_and_not_quiet(monkeypatch, out, quiet, shown):
    out = out()
    monkeypatch.setattr(sys, "stdout", out)
    with progress("collect", 7, quiet) as tick:
        tick(6)
    assert ("collect" in out.getvalue() and "/7 " in out.getvalue()) == shown  # a bar of the phase's total
    assert shown or out.getvalue() == ""


def test_summary_line():
    row = {"Eval_AverageReturn": [100.0, 300.0], "Eval_StdReturn": [5.0, 7.0], "Eval_AverageEpLen": [50.0, 70.0],
           "Train_AverageReturn": [10.0, 30.0], "Training Loss": [-1.0, -3.0], "Train_EnvstepsSoFar": [1000, 1200]}
    line = summary_line(2, 10, row, {"collection": 1.25, "training": 0.5, "logging": 0.01})
    assert line == ("itr 2/9 | eval 200.0 ± 100.0 (len 60) | train 20.0 | loss -2 | 1100 env steps"
                    " | 1.8 s (collection 1.2, training 0.5)")
    one_seed = {k: v[:1] for k, v in row.items()}
    assert "eval 100.0 ± 5.0" in summary_line(0, 1, one_seed, {})
    assert summary_line(3, 10, one_seed, {"training": 0.2}).endswith(" | 0.2 s (training 0.2)")
