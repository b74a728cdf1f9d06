#!/usr/bin/env python
"""Import times: what a run pays before its first line of work, each module in a fresh process.

Seconds from interpreter start to the module imported (`python -c "import X"`, numpy already imported so
each row is the module's own cost), medians of interleaved rounds. `--ml_dtypes DIR` adds the same rows
with another ml_dtypes first on sys.path (e.g. `pip install --target DIR ml_dtypes==0.7.0 --no-deps`), to
compare the version pinned in pyproject.toml with another.

    python benchmarks/bench_imports.py [--rounds 5] [--ml_dtypes DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import _common

MODULES = ("ml_dtypes", "jax", "flax.training.train_state", "optax", "gymnasium", "mujoco")


def _python(code: str, path: str | None) -> str:
    """What `code` prints in a fresh interpreter, with `path` (if any) first on sys.path."""
    env = {**os.environ, "PYTHONPATH": path} if path else dict(os.environ)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def import_seconds(module: str, path: str | None) -> float:
    return float(_python(f"import numpy, time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)",
                         path))


def version(path: str | None) -> str:
    return _python("import ml_dtypes; print(ml_dtypes.__version__)", path).strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ml_dtypes", default=None, help="a directory holding another ml_dtypes, to compare")
    args = p.parse_args()
    paths = {f"ml_dtypes {version(None)}": None}
    if args.ml_dtypes:
        paths[f"ml_dtypes {version(args.ml_dtypes)}"] = args.ml_dtypes
    variants = {(m, name): (lambda m=m, path=path: import_seconds(m, path)) for m in MODULES for name, path in paths.items()}
    seconds = _common.interleaved(variants, args.rounds)
    rows = [[m, name, _common.median(seconds[(m, name)])] for m, name in variants]
    _common.print_table(["module", "with", "import seconds (median)"], rows)
    _common.write_json(_common.RESULTS / "imports.json", {
        "benchmark": "imports", "machine": _common.machine(), "rounds": args.rounds,
        "results": [{"module": m, "with": name, "seconds": seconds[(m, name)]} for m, name in variants]})


if __name__ == "__main__":
    main()
