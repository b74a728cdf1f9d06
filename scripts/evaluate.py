#!/usr/bin/env python
"""Evaluate a saved policy: python scripts/evaluate.py RUN_DIR [--step N] [--episodes N] [--sample] [--video out.mp4]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from bcjax.run.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
