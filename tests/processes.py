"""Ending the processes a test started (its own Ray cluster), without `ray stop`, which would
stop every Ray process on the machine."""

from __future__ import annotations

import psutil


def end_processes(processes: list[psutil.Process], timeout: float = 5) -> None:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL what is left."""
    for process in processes:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=timeout)
