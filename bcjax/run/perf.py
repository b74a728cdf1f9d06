"""JAX in this process: its persistent compilation cache, its CPU thread pool, and what a run costs besides
its phases (compile time, programs loaded from the cache, peak memory).

The compilation cache is on by default, so a run compiles each program once per machine: a run compiles
its fused trainer and a few small programs (~9 s on a small CPU); a later run with the same shapes and
flags loads them from disk. It lives in `$BCJAX_CACHE_DIR` when set (the test suite points it at a
temporary directory), else `$XDG_CACHE_HOME/bcjax/jax`, else `~/.cache/bcjax/jax`. A directory that
cannot be made or written costs one warning line, never the run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import sys
import warnings
from pathlib import Path

import jax

from bcjax.data.files import check_writable_dir
from bcjax.errors import BcjaxError

CACHE_ENV = "BCJAX_CACHE_DIR"
_COMPILE_EVENTS = {f"/jax/core/compile/{name}_duration" for name in ("jaxpr_trace", "jaxpr_to_mlir_module", "backend_compile")}
_totals = {"compile_s": 0.0, "cache_hits": 0}
_CACHE_FAILURES = ("Error writing persistent compilation cache entry", "Error reading persistent compilation cache entry")


def _on_duration(event: str, duration: float, **_: object) -> None:
    if event in _COMPILE_EVENTS:
        _totals["compile_s"] += duration


def _on_event(event: str, **_: object) -> None:
    _totals["cache_hits"] += event == "/jax/compilation_cache/cache_hits"


@functools.cache
def _listen() -> None:
    """Register JAX's (process-wide, never removed) listeners once, when a run starts: importing bcjax
    registers nothing."""
    jax.monitoring.register_event_duration_secs_listener(_on_duration)
    jax.monitoring.register_event_listener(_on_event)


def compile_seconds() -> float:
    """Seconds spent tracing, lowering and compiling since the first call."""
    _listen()
    return _totals["compile_s"]


def cache_hits() -> int:
    """Programs this process loaded from the persistent cache instead of compiling them."""
    return int(_totals["cache_hits"])


def cache_dir() -> Path:
    """Where the cache lives: $BCJAX_CACHE_DIR, else $XDG_CACHE_HOME/bcjax/jax, else ~/.cache/bcjax/jax."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bcjax" / "jax"


def enable_compile_cache(enabled: bool = True) -> Path | None:
    """Turn JAX's persistent compilation cache on (or leave it off); returns the cache directory, or None.

    Call it before the first JAX compilation: JAX reads the settings when it first compiles.
    """
    path = cache_dir() if enabled else None
    if path is not None:
        try:
            check_writable_dir(path, CACHE_ENV)
        except BcjaxError as e:
            print(f"warning: compilation cache off ({e}), or pass --no_compile_cache", file=sys.stderr)
            path = None
    jax.config.update("jax_enable_compilation_cache", path is not None)
    if path is not None:
        jax.config.update("jax_compilation_cache_dir", str(path))
        # JAX by default caches only programs that took >= 1 s to compile; a run's many small ones add up too.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        _listen()
        _one_cache_warning()
    return path


@functools.cache
def _one_cache_warning() -> None:
    """JAX warns once per program it cannot store in (or load from) the cache: a full disk gives a dozen
    warnings. The first becomes one line of ours, the others are dropped; other warnings show as before."""
    show, said = warnings.showwarning, []

    def shown(message: Warning | str, category: type[Warning], *args: object, **kw: object) -> None:
        text = str(message)
        if not text.startswith(_CACHE_FAILURES):
            show(message, category, *args, **kw)
        elif not said:
            said.append(text)
            print(f"warning: the compilation cache in {jax.config.jax_compilation_cache_dir} failed "
                  f"({text.split(': ', 1)[-1]}); programs are compiled as usual: free space there, or pass "
                  "--no_compile_cache", file=sys.stderr)
    warnings.showwarning = shown


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def limit_cpu_threads(n: int) -> None:
    """Size JAX's CPU thread pool for `n` cores (0: all); call it before the first JAX computation.

    XLA sizes the pool from the CPU affinity mask when its CPU backend starts
    (the way JAX's maintainers point to for limiting its threads), so the mask is
    narrowed for that moment only: the threads may still run on any core. On a
    small shared CPU one thread runs BC's small updates faster than two, because
    a split op waits for its slower half (see README, Speed).
    """
    if not hasattr(os, "sched_setaffinity"):  # not Linux: JAX keeps its own pool size
        return
    cores = os.sched_getaffinity(0)
    if not 0 < n < len(cores):  # 0 (or more than there are): all cores
        return
    os.sched_setaffinity(0, set(sorted(cores)[:n]))
    try:
        jax.devices()  # starts the backends; the CPU one sizes its pool now
    finally:
        for tid in os.listdir("/proc/self/task"):  # threads started meanwhile inherited the narrow mask
            with contextlib.suppress(OSError):  # (a thread that has exited since)
                os.sched_setaffinity(int(tid), cores)
