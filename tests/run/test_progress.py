"""Progress bars (TTY only, not with --quiet) and the one-line iteration summary."""

from __future__ import annotations

import io
import sys

from bcjax.run.progress import Progress, bars_wanted, summary_line


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal_and_not_quiet(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert not bars_wanted(quiet=False)
    monkeypatch.setattr(sys, "stdout", _Tty())
    assert bars_wanted(quiet=False)
    assert not bars_wanted(quiet=True)


def test_disabled_progress_shows_nothing(monkeypatch):
    out = _Tty()
    monkeypatch.setattr(sys, "stdout", out)
    with Progress(enabled=False).phase("collect", 10) as tick:
        tick(5)
    assert out.getvalue() == ""


def test_enabled_progress_shows_the_phase(monkeypatch):
    out = _Tty()
    monkeypatch.setattr(sys, "stdout", out)
    with Progress(enabled=True).phase("collect", 7) as tick:
        tick(6)
    assert "collect" in out.getvalue() and "/7 " in out.getvalue()  # a bar of the phase's total


def test_summary_line():
    row = {"Eval_AverageReturn": [100.0, 300.0], "Eval_StdReturn": [5.0, 7.0], "Eval_AverageEpLen": [50.0, 70.0],
           "Train_AverageReturn": [10.0, 30.0], "Training Loss": [-1.0, -3.0], "Train_EnvstepsSoFar": [1000, 1200]}
    line = summary_line(2, 10, row, {"collection": 1.25, "training": 0.5, "logging": 0.01})
    assert line == ("itr 2/9 | eval 200.0 ± 100.0 (len 60) | train 20.0 | loss -2 | 1100 env steps"
                    " | 1.8 s (collection 1.2, training 0.5)")
    one_seed = {k: v[:1] for k, v in row.items()}
    assert "eval 100.0 ± 5.0" in summary_line(0, 1, one_seed, {})
    assert summary_line(3, 10, None, {"training": 0.2}) == "itr 3/9 | 0.2 s (training 0.2)"
