"""Write an output directory as a whole: build it in a temporary sibling, swap it in at the end.

A failure leaves the previous output (or nothing) in place, never a half-written directory;
a write that fails (a full device) names the output file, the space it needed and had.
Outputs identical to the previous run's are carried over as hard links of the old files,
so unchanged images and annotation files are not rewritten (same inode, same mtime).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import threading
import uuid
from pathlib import Path
from types import TracebackType
from typing import Literal

from visionforge import storage
from visionforge_coco.problems import DataFormatError

LinkMode = Literal["copy", "hard", "sym"]


class StagedDir:
    """A directory written through a staging sibling; use as a context manager."""

    def __init__(self, final: str | os.PathLike[str]) -> None:
        self.final = Path(final).absolute()
        self.stage = self.final.with_name(f".{self.final.name}.{uuid.uuid4().hex[:8]}.tmp")
        self.rewritten = 0
        self.reused = 0
        self._made: set[str] = set()
        self._lock = threading.Lock()  # place/write_bytes run on thread pools
        self._had_final = False
        self._stage_prefix = os.path.join(self.stage, "")  # + rel: the hot path's join
        self._final_prefix = os.path.join(self.final, "")

    def __enter__(self) -> StagedDir:
        self.stage.mkdir(parents=True)
        self._had_final = self.final.is_dir()  # no previous output: nothing to reuse
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            shutil.rmtree(self.stage, ignore_errors=True)

    def path(self, rel: str) -> Path:
        """Staging path of ``rel`` (parent directories created)."""
        return Path(self._staged(rel))

    def _staged(self, rel: str) -> str:
        """``path(rel)`` as a string (the per-file hot path avoids pathlib)."""
        parent = rel.rpartition("/")[0]
        if parent not in self._made:
            os.makedirs(self._stage_prefix + parent, exist_ok=True)
            self._made.add(parent)
        return self._stage_prefix + rel

    def _reuse(self, rel: str, target: str | os.PathLike[str]) -> bool:
        try:
            os.link(self._final_prefix + rel, target)
        except OSError:
            return False
        with self._lock:
            self.reused += 1
        return True

    def place(self, src: str | os.PathLike[str], rel: str, mode: LinkMode) -> None:
        """Put ``src`` at ``rel``: copied, hard-linked or symlinked; unchanged ones reused."""
        target = self._staged(rel)
        if mode == "sym":
            os.symlink(os.path.abspath(src), target)
            return
        if (
            self._had_final  # else there is no previous output to compare with
            and _unchanged(src, self._final_prefix + rel, mode)
            and self._reuse(rel, target)
        ):
            return
        try:
            if mode == "hard":
                os.link(src, target)
            else:
                with storage.write_errors(self.final / rel, needed=os.path.getsize(src)):
                    shutil.copy2(src, target)
        except OSError as err:
            if mode == "hard" and err.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise DataFormatError(
                    f"{os.fspath(src)}: cannot hard-link into {self.final} ({err.strerror}); "
                    "use --link copy or --link sym"
                ) from None
            raise
        with self._lock:
            self.rewritten += 1

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file; reuse the previous output when its bytes are identical."""
        target = self.path(rel)
        old = self.final / rel
        unchanged = old.is_file() and old.stat().st_size == len(data) and old.read_bytes() == data
        if unchanged and self._reuse(rel, target):
            return
        with storage.write_errors(self.final / rel, needed=len(data)):
            target.write_bytes(data)
        with self._lock:
            self.rewritten += 1

    def commit(self) -> None:
        """Swap the staging directory into place."""
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(self.final, old)
        os.replace(self.stage, self.final)
        if old is not None:
            shutil.rmtree(old)


def _unchanged(src: str | os.PathLike[str], old: str, mode: LinkMode) -> bool:
    """Whether the previous output ``old`` already is ``src`` (hard) or a copy of it."""
    try:
        before = os.lstat(old)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(before.st_mode):
        return False
    now = os.stat(src)
    if mode == "hard":
        return (now.st_dev, now.st_ino) == (before.st_dev, before.st_ino)
    return now.st_size == before.st_size and now.st_mtime_ns == before.st_mtime_ns
