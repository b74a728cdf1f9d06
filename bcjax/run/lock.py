"""One writer per run directory: an exclusive lock on <run_dir>/lock, which names its owner's pid.

The lock is an flock(2) on the open file, so it ends with the process that holds
it: a lock file left by a killed run is simply taken over.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bcjax.data.files import write_failure
from bcjax.errors import BcjaxError

LOCK_FILE = "lock"


class RunLock:
    """Held from `acquire` to `release` (or the process's end)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise write_failure(self.path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BcjaxError(f"{self.path.parent} is in use by process {owner} (another training run or --resume): "
                             "wait for it to finish or stop it, then try again") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            os.close(fd)
            raise write_failure(self.path, e) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (an unlocked file is free)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
