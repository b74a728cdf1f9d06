"""JAX's persistent compilation cache, on by default, so a run compiles each program once per machine.

A run compiles its fused trainer and a few small programs (~9 s on a small CPU);
with the cache a later run with the same shapes and flags loads them from disk.
The cache lives in `$BCJAX_CACHE_DIR` when set (the test suite points it at a
temporary directory), else `$XDG_CACHE_HOME/bcjax/jax`, else `~/.cache/bcjax/jax`.
A directory that cannot be made or written costs one warning line, never the run.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

CACHE_ENV = "BCJAX_CACHE_DIR"
_hits = {"count": 0}


def cache_dir() -> Path:
    """Where the cache lives: $BCJAX_CACHE_DIR, else $XDG_CACHE_HOME/bcjax/jax, else ~/.cache/bcjax/jax."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bcjax" / "jax"


def _count_hit(event: str, **_: object) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _hits["count"] += 1


def cache_hits() -> int:
    """Programs this process loaded from the persistent cache instead of compiling them."""
    return _hits["count"]


def _writable(path: Path) -> str | None:
    """Why `path` cannot hold the cache, or None when it can."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def enable_compile_cache(enabled: bool = True) -> Path | None:
    """Turn JAX's persistent compilation cache on (or leave it off); returns the cache directory, or None.

    Call it before the first JAX compilation: JAX reads the settings when it first compiles.
    """
    import jax

    if not enabled:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    path = cache_dir()
    problem = _writable(path)
    if problem:
        print(f"warning: compilation cache off ({path}: {problem}); set {CACHE_ENV} to a writable directory "
              "or pass --no_compile_cache", file=sys.stderr)
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # JAX by default caches only programs that took >= 1 s to compile; a run's many small ones add up too.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if not _listening:
        jax.monitoring.register_event_listener(_count_hit)
        _listening.append(True)
    return path


_listening: list[bool] = []  # the hit counter is registered once per process
