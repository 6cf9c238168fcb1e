"""How many CPUs this process may use (torch-free, for loaders and transfer pools)."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on (``os.sched_getaffinity``: a container's or
    ``taskset``'s limit), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
