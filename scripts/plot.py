#!/usr/bin/env python
"""Plot runs: python scripts/plot.py RUN_DIR [RUN_DIR ...] [--out fig.png] [--hparam NAME] [--metric NAME]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from bcjax.run.plots import main

if __name__ == "__main__":
    sys.exit(main())
