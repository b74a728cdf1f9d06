"""`python watchdog.py PID`, started by a sweep (bcjax.sweeps.runner.start_ray) with a pipe from it as stdin: once
the sweep's process PID is gone, however it ended (even SIGKILL, which it cannot catch), kill what it left of the
processes it started. Ray's dashboard and runtime-env agents outlive a killed sweep, and then ignore SIGTERM."""

import contextlib
import os
import select
import sys

import psutil


def main(pid: int) -> None:
    seen: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        driver = psutil.Process(pid)
        while not select.select([sys.stdin], [], [], 1.0)[0]:  # the pipe ends (readable, empty) with the sweep
            seen.update((p.pid, p) for p in driver.children(recursive=True) if p.pid != os.getpid())  # Ray starts workers as it goes
    for p in seen.values():
        with contextlib.suppress(psutil.Error):  # gone already; psutil checks that a pid is not reused
            p.kill()


if __name__ == "__main__":
    main(int(sys.argv[1]))
