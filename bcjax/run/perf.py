"""What a run costs besides its phases (JAX compile time, peak memory), and the size of JAX's CPU thread pool."""

from __future__ import annotations

import os
import resource
import sys

import jax

from bcjax.errors import BcjaxError

_COMPILE_EVENTS = frozenset({
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
})
_totals = {"seconds": 0.0, "programs": 0, "listening": False}


def _on_duration(event: str, duration: float, **_: object) -> None:
    if event in _COMPILE_EVENTS:
        _totals["seconds"] += duration
        _totals["programs"] += event.endswith("backend_compile_duration")


def compile_totals() -> tuple[float, int]:
    """Seconds spent tracing, lowering and compiling, and XLA programs compiled, since the first call.

    A run calls it first at its start: that registers JAX's (process-wide, never removed)
    listener once, so importing bcjax registers nothing.
    """
    if not _totals["listening"]:
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        _totals["listening"] = True
    return _totals["seconds"], int(_totals["programs"])


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def limit_cpu_threads(n: int) -> None:
    """Size JAX's CPU thread pool for `n` cores; call it before the first JAX computation.

    XLA sizes the pool from the CPU affinity mask when its CPU backend starts
    (the way JAX's maintainers point to for limiting its threads), so the mask is
    narrowed for that moment only: the threads may still run on any core. On a
    small shared CPU one thread runs BC's small updates faster than two, because
    a split op waits for its slower half (see README, Speed).
    """
    if n <= 0:
        raise BcjaxError(f"--cpu_threads must be positive, got {n}")
    if not hasattr(os, "sched_setaffinity"):  # not Linux: JAX keeps its own pool size
        return
    cores = os.sched_getaffinity(0)
    if n >= len(cores):
        return
    os.sched_setaffinity(0, set(sorted(cores)[:n]))
    try:
        jax.devices()  # starts the backends; the CPU one sizes its pool now
    finally:
        for tid in os.listdir("/proc/self/task"):  # threads started meanwhile inherited the narrow mask
            try:
                os.sched_setaffinity(int(tid), cores)
            except OSError:  # a thread that has exited since
                pass
