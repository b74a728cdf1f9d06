"""Writing files so that a kill or a full disk never leaves half of one, and failures are one line."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from bcjax.errors import BcjaxError


def write_failure(path: str | Path, e: OSError, flag: str = "--logdir") -> BcjaxError:
    """The one-line error for a failed write to `path`: what the system said and what to do (with `flag`)."""
    fix = {**dict.fromkeys((errno.ENOSPC, errno.EDQUOT), f"free space on that disk or pick another {flag}"),
           errno.EFBIG: "the file size limit (ulimit -f) is too low: raise it",
           errno.EROFS: f"that file system is read-only: pick a writable {flag}",
           errno.EACCES: f"no permission there: pick a writable {flag}",
           errno.ENOTDIR: f"a part of that path is a file, not a directory: pick another {flag}",
           }.get(e.errno, "check that the path is a writable directory with free space")
    return BcjaxError(f"cannot write {path}: {e.strerror or e}; {fix}")


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` through a uniquely named sibling, then rename it into place.

    Readers see the old file or the whole new one; two writers never share a temporary
    file; a failure (disk full, read-only) removes the temporary file and raises BcjaxError.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise write_failure(path, e) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def append_line(path: str | Path, line: str) -> None:
    """Append one complete line (one write call); a failure raises BcjaxError naming the file.

    A kill or full disk can still leave a torn last line: readers drop it (logger.read_jsonl).
    """
    try:
        with open(path, "a", newline="") as f:
            f.write(line if line.endswith("\n") else line + "\n")
    except OSError as e:
        raise write_failure(path, e) from None


def check_writable_dir(path: str | Path, flag: str) -> Path:
    """Create `path` if needed and prove a file can be written there; one line naming `flag` if not."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise BcjaxError(f"{flag} {path} is a file, not a directory: pick a directory")
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise write_failure(path, e, flag) from None
    return path
