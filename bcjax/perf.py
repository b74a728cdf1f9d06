"""What a run costs besides its phases: JAX compile time (from jax.monitoring events) and peak memory."""

from __future__ import annotations

import resource
import sys

import jax

_COMPILE_EVENTS = frozenset({
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
})
_totals = {"seconds": 0.0, "programs": 0}


def _on_duration(event: str, duration: float, **_: object) -> None:
    if event in _COMPILE_EVENTS:
        _totals["seconds"] += duration
        _totals["programs"] += event.endswith("backend_compile_duration")


# Process-wide and read-only: counting needs a listener registered before the compiles happen.
jax.monitoring.register_event_duration_secs_listener(_on_duration)


def compile_totals() -> tuple[float, int]:
    """Seconds spent tracing, lowering and compiling, and XLA programs compiled, in this process so far."""
    return _totals["seconds"], int(_totals["programs"])


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
