"""Stopping the processes a test started (Ray heads, killed drivers and their children)."""

import psutil


def signal_all(procs: list[psutil.Process], method: str = "kill") -> None:
    """`kill` or `terminate` every process that still exists."""
    for p in procs:
        try:
            getattr(p, method)()
        except psutil.NoSuchProcess:
            pass
