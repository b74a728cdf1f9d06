"""The one exception type users see: its message names the problem and the fix."""

from __future__ import annotations

import sys
from collections.abc import Callable


class BcjaxError(Exception):
    """A problem with the user's input; scripts print it on one line and exit non-zero."""


def run_script(body: Callable[[], int], interrupted: str = "interrupted") -> int:
    """A script's exit code: a BcjaxError (or a failed thread start) is one `error: ...` line and 2; Ctrl-C
    prints `interrupted`, 130."""
    try:
        return body()
    except BcjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if "can't start new thread" not in str(e):  # (CPython's words) a pids or thread limit was reached
            raise
        print(f"error: no new thread could be started ({e}): raise this process's thread limit (ulimit -u, the "
              "container's pids limit) or use fewer --rollout_workers", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
