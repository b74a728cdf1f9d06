#!/usr/bin/env python
"""Train an expert with SAC and export it (CS285 format). See --help and bcjax/experts/training.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from bcjax.experts.training import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
