"""Peak resident memory of this process on Linux, for the benchmarks' memory columns."""

from __future__ import annotations

import ctypes
from pathlib import Path


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``: this address space only,
    unlike ``ru_maxrss``, which starts from the RSS of the parent that forked the process)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> int:
    """Return freed heap to the OS, start the peak (``VmHWM``) afresh from the current RSS
    (Linux >= 4.0) and return that RSS in KiB."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return status_kib("VmRSS")
