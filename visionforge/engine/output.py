"""The run's output location: files are written to a local directory first, then published.

For a local ``trainer.output`` the local directory is the output itself (files appear by
atomic rename). For an fsspec URL (``s3://...``, ``memory://...``) files are staged in a
temporary directory and uploaded; checkpoints before their manifests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from visionforge import storage


class RunOutput:
    """Local staging paths and published URLs of one run's files."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.remote = storage.is_remote(url)
        if self.remote:
            self.local_dir = Path(tempfile.mkdtemp(prefix="visionforge-run-"))
        else:
            self.local_dir = Path(url.removeprefix("file://"))
            self.local_dir.mkdir(parents=True, exist_ok=True)

    def local(self, name: str) -> Path:
        """Where ``name`` is written on this machine."""
        return self.local_dir / name

    def target(self, name: str) -> str:
        """Where ``name`` ends up (the local path itself, or a URL)."""
        if self.remote:
            return storage.join(self.url, name)
        return str(self.local(name))

    def publish(self, *names: str) -> None:
        """Upload files (in the given order) to the remote output; no-op when local."""
        if not self.remote:
            return
        for name in names:
            storage.put_file(self.local(name), self.target(name))

    def publish_tree(self, name: str) -> None:
        """Upload a directory (e.g. ``tensorboard/``) file by file."""
        if not self.remote:
            return
        root = self.local(name)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(self.local_dir).as_posix()
            storage.put_file(path, self.target(rel))

    def fetch(self, name: str) -> str | None:
        """Path or URL of ``name`` if it exists in the output, else None."""
        target = self.target(name)
        return target if storage.exists(target) else None

    def copy(self, source: str, name: str) -> None:
        """Copy a local staged file to another local name atomically."""
        size = self.local(source).stat().st_size
        with storage.atomic_local_path(self.local(name), needed=size) as tmp:
            shutil.copyfile(self.local(source), tmp)

    def drop_staged(self, *names: str) -> None:
        """Delete published files from a remote output's staging directory (saves disk)."""
        if not self.remote:
            return
        for name in names:
            self.local(name).unlink(missing_ok=True)

    def cleanup(self) -> None:
        """Remove the staging directory of a remote output."""
        if self.remote and self.local_dir.exists():
            shutil.rmtree(self.local_dir, ignore_errors=True)

    def __fspath__(self) -> str:
        return os.fspath(self.local_dir)
