"""Moving one file of a sync (upload, download or S3-to-S3 copy) with per-file retries."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from visionforge_aws.sync_s3 import S3, FileState, is_s3, strip

SMALL_FILE = 16 << 20
"""Files up to this size go in one PUT (read into memory); larger ones as s3fs multipart
uploads streamed from disk."""
INLINE_IO = 1 << 20
"""Files up to this size are read, hashed and written on the event loop (a page-cache read
of a few KB costs less than handing it to a thread and back)."""

T = TypeVar("T")
R = TypeVar("R")


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_small(path: Path) -> tuple[bytes, FileState]:
    """A file's bytes, with the size, hash and mtime of exactly those bytes."""
    with open(path, "rb") as f:
        stat = os.fstat(f.fileno())
        data = f.read()
    return data, FileState(len(data), hashlib.sha256(data).hexdigest(), stat.st_mtime_ns)


def _write_small(target: Path, data: bytes) -> None:
    """Write through a hidden partial file, so a killed sync leaves no truncated file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, target)


async def pool(
    items: list[T], work: Callable[[T], Awaitable[R]], concurrency: int
) -> list[R | BaseException]:
    """``work`` on every item, ``concurrency`` at a time; exceptions are returned."""
    results: list[R | BaseException] = [None] * len(items)  # type: ignore[list-item]
    todo = iter(enumerate(items))

    async def worker() -> None:
        for i, item in todo:
            try:
                results[i] = await work(item)
            except Exception as err:
                results[i] = err

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(items)))))
    return results


class Mover:
    """Moves files from ``source`` to ``destination`` (one side or both ``s3://``)."""

    def __init__(self, source: str, destination: str, *, retries: int, backoff: float) -> None:
        self.source = source
        self.destination = destination
        self.retries = retries
        self.backoff = backoff
        self.retried = 0
        """Retries so far, over all files."""

    async def with_retries(self, call: Callable[[], Awaitable[None]]) -> None:
        """Run ``call``; retry transient errors with exponential backoff and jitter."""
        for attempt in range(self.retries + 1):
            try:
                await call()
                return
            except (PermissionError, FileNotFoundError, IsADirectoryError):
                raise  # AccessDenied, NoSuchBucket, a vanished local file: retrying won't help
            except Exception:
                if attempt == self.retries:
                    raise
                self.retried += 1
                delay = self.backoff * (2**attempt) * (0.5 + random.random())
                await asyncio.sleep(min(delay, 20.0))

    async def move(self, s3: S3, key: str, state: FileState) -> FileState:
        """Transfer one file (retried); returns what arrived (size, sha256, source mtime)."""
        if not is_s3(self.source):
            return await self._upload(s3, key, state)
        if is_s3(self.destination):
            return await self._copy(s3, key, state)
        return await self._download(s3, key, state)

    async def _upload(self, s3: S3, key: str, state: FileState) -> FileState:
        local = Path(self.source) / key
        remote = f"{strip(self.destination)}/{key}"
        if state.size > SMALL_FILE:
            digest = await asyncio.to_thread(sha256_file, local)
            await self.with_retries(lambda: s3.put_file(str(local), remote, digest))
            return FileState(state.size, digest, state.mtime_ns)
        if state.size <= INLINE_IO:
            data, sent = _read_small(local)
        else:
            data, sent = await asyncio.to_thread(_read_small, local)
        digest = sent.sha256 or ""
        await self.with_retries(lambda: s3.put_bytes(remote, data, digest))
        return sent

    async def _download(self, s3: S3, key: str, state: FileState) -> FileState:
        remote = f"{strip(self.source)}/{key}"
        target = Path(self.destination) / key
        if state.size > INLINE_IO:

            async def fetch_large() -> None:
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(f".{target.name}.partial")
                await s3.fs._get_file(remote, str(partial))
                if state.sha256 and await asyncio.to_thread(sha256_file, partial) != state.sha256:
                    partial.unlink()
                    raise OSError(f"{key}: downloaded content does not match its sha256")
                os.replace(partial, target)

            await self.with_retries(fetch_large)
            return state

        async def fetch_small() -> None:
            data = await s3.get_bytes(remote)
            if state.sha256 and hashlib.sha256(data).hexdigest() != state.sha256:
                raise OSError(f"{key}: downloaded content does not match its sha256")
            _write_small(target, data)

        await self.with_retries(fetch_small)
        return state

    async def _copy(self, s3: S3, key: str, state: FileState) -> FileState:
        src, dst = f"{strip(self.source)}/{key}", f"{strip(self.destination)}/{key}"
        await self.with_retries(lambda: s3.fs._copy(src, dst))
        return state
