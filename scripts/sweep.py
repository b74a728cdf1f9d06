#!/usr/bin/env python
"""Run a grid of BC / DAgger runs as Ray Tune trials (an embedded Ray, or a cluster with --address). See --help."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from bcjax.sweeps.sweep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
