"""The one exception type users see: its message names the problem and the fix."""

from __future__ import annotations

import sys
from collections.abc import Callable


class BcjaxError(Exception):
    """A problem with the user's input; scripts print it on one line and exit non-zero."""


def run_script(body: Callable[[], int], interrupted: str = "interrupted") -> int:
    """A script's exit code: a BcjaxError is one `error: ...` line and 2; Ctrl-C prints `interrupted`, 130."""
    try:
        return body()
    except BcjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
