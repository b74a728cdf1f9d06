"""SIGTERM and SIGINT stop a run at the next iteration boundary; a second signal exits at once.

A scheduler (or Ray) sends SIGTERM on preemption and Ctrl-C sends SIGINT: the
first one lets the current iteration finish (its checkpoint included, so the
resume state is the one just saved), the training loop then raises `Stopped`,
and the script prints how to resume and exits with 128 + the signal number.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

_received: list[int] = []


class Stopped(Exception):
    """Raised at an iteration boundary after a stop signal."""

    def __init__(self, signum: int, iteration: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} after iteration {iteration}")
        # exit_code: the shell's convention, 128 + the signal (130 for SIGINT, 143 for SIGTERM)
        self.signum, self.iteration, self.exit_code = signum, iteration, 128 + signum


def _handler(signum: int, frame: object) -> None:
    if _received:  # the second signal: no more waiting
        print(f"\n{signal.Signals(signum).name} again: exiting now; the run directory keeps its last complete "
              "checkpoint", file=sys.stderr, flush=True)
        os._exit(128 + signum)
    _received.append(signum)
    print(f"\n{signal.Signals(signum).name}: stopping after this iteration (send it again to exit at once)",
          file=sys.stderr, flush=True)


def stop_requested() -> bool:
    return bool(_received)


def check_stop(iteration: int) -> None:
    """At an iteration boundary: raise Stopped if a stop signal arrived."""
    if _received:
        raise Stopped(_received[0], iteration)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within this block SIGTERM/SIGINT request a stop instead of killing the process."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield  # e.g. a Ray Tune trial's thread: only the main thread may set handlers; the host handles signals
        return
    old = {s: signal.signal(s, _handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _received.clear()
