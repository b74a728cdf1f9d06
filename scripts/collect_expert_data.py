#!/usr/bin/env python
"""Roll an expert out and write CS285-format expert data or a Minari dataset. See --help and bcjax/experts/collection.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from bcjax.experts.collection import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
