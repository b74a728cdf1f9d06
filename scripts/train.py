#!/usr/bin/env python
"""Train a policy by Behavioral Cloning or DAgger (CS285 hw1 flags). See --help."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from bcjax.run.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
