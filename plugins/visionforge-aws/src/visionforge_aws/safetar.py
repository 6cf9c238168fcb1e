"""Safe extraction of archives that come from elsewhere (a job's model.tar.gz)."""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from visionforge.errors import StorageError


def extract(archive: Path, target: Path) -> list[Path]:
    """Extract ``archive`` into ``target`` with tarfile's ``data`` filter: absolute paths
    (which the filter alone would strip and extract), ``..``, links pointing outside
    ``target`` and device files are refused (the whole archive is, before anything is
    written). Returns the regular files extracted."""
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            if member.name.startswith(("/", "\\")) or PurePosixPath(member.name).is_absolute():
                raise StorageError(
                    f"{archive}: unsafe member refused ({member.name!r} is an absolute path)"
                )
            try:
                tarfile.data_filter(member, str(target))
            except tarfile.FilterError as err:
                raise StorageError(f"{archive}: unsafe member refused ({err})") from None
        tar.extractall(target, filter="data")
    root = target.resolve()
    return sorted(
        p
        for p in (root / m.name for m in members if m.isfile())
        if p.resolve().is_relative_to(root)
    )
