"""Sync a folder tree between a local path and S3 (either side), or between two S3 prefixes.

Transfers run concurrently through s3fs's async API (bounded by ``concurrency``, with a
connection pool of the same size). Unchanged files are skipped by size and SHA-256: every
object we upload carries its hash in its metadata (``x-amz-meta-sha256``) and the destination
prefix keeps a *sync manifest* (``.visionforge-sync.json``: key -> size, sha256), so a re-sync
costs one listing and one GET instead of a HEAD per object (ListObjectsV2 returns no metadata,
and a multipart ETag is no MD5). The manifest is rewritten every few seconds and at the end,
and objects that arrived after its last write (a sync killed with -9) are recognised by their
metadata, so an interrupted sync resumes without re-sending what arrived.

Each file is retried with exponential backoff; a file that keeps failing is reported and never
cancels the others. Credentials, region and endpoint come from the standard AWS configuration
(environment, ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, profiles, instance roles).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from visionforge.errors import StorageError

MANIFEST_NAME = ".visionforge-sync.json"
HASH_KEY = "sha256"
MANIFEST_EVERY_S = 5.0
SMALL_FILE = 16 << 20
"""Files up to this size go in one PUT; larger ones as s3fs multipart uploads."""

T = TypeVar("T")


class SyncError(StorageError):
    """A sync could not start (bad source or destination)."""


@dataclass
class FileState:
    size: int
    sha256: str | None = None
    mtime_ns: int | None = None
    """Of the local source file the hash was computed from (a re-sync trusts the manifest's
    hash while size and mtime are unchanged, so it reads no file)."""


@dataclass
class SyncReport:
    """What a sync did (or, with ``dry_run``, would do)."""

    source: str
    destination: str
    transferred: list[str] = field(default_factory=list)
    skipped: int = 0
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes: int = 0
    retries: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        verb = "would transfer" if self.dry_run else "transferred"
        line = (
            f"{verb} {len(self.transferred)} files ({_human(self.bytes)}), "
            f"skipped {self.skipped} unchanged, "
            f"{'would delete' if self.dry_run else 'deleted'} {len(self.deleted)}, "
            f"failed {len(self.failed)}, retries {self.retries}, {self.seconds:.2f} s"
        )
        return line


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def _strip(url: str) -> str:
    """``s3://bucket/prefix/`` -> ``bucket/prefix`` (s3fs paths)."""
    return url.removeprefix("s3://").rstrip("/")


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _local_tree(root: Path) -> dict[str, FileState]:
    """Every file under ``root`` by its '/'-separated relative key (symlinks followed)."""
    files: dict[str, FileState] = {}
    for folder, _, names in os.walk(root, followlinks=True):
        for name in names:
            path = os.path.join(folder, name)
            key = os.path.relpath(path, root).replace(os.sep, "/")
            if key == MANIFEST_NAME:
                continue
            stat = os.stat(path)
            files[key] = FileState(stat.st_size, mtime_ns=stat.st_mtime_ns)
    return files


def _hash_local(root: Path, keys: Iterable[str], files: dict[str, FileState]) -> None:
    """Fill in the SHA-256 of ``keys`` (threads: hashlib releases the GIL)."""
    todo = [k for k in keys if files[k].sha256 is None]
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        for key, digest in zip(todo, pool.map(lambda k: sha256_file(root / k), todo), strict=True):
            files[key].sha256 = digest


class _S3:
    """The async s3fs filesystem a sync uses, and the few calls it makes."""

    def __init__(self, concurrency: int) -> None:
        import s3fs

        self.fs = s3fs.S3FileSystem(
            asynchronous=True,
            skip_instance_cache=True,
            config_kwargs={
                "max_pool_connections": concurrency,
                "retries": {"mode": "standard", "total_max_attempts": 1},  # we retry per file
            },
        )
        self.fs.retries = 1
        self.client: Any = None

    async def __aenter__(self) -> _S3:
        self.client = await self.fs.set_session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:
            await self.client.close()

    async def tree(self, prefix: str) -> dict[str, FileState]:
        """Objects under ``prefix`` (one paginated listing), by relative key."""
        root = _strip(prefix)
        try:
            found = await self.fs._find(root, detail=True)
        except FileNotFoundError:
            return {}
        files = {}
        for path, info in found.items():
            if info.get("type") == "directory":
                continue
            key = path[len(root) + 1 :] if path != root else os.path.basename(path)
            if key and key != MANIFEST_NAME:
                files[key] = FileState(int(info["size"]))
        return files

    async def read_manifest(self, prefix: str) -> dict[str, FileState]:
        try:
            raw = await self.fs._cat_file(f"{_strip(prefix)}/{MANIFEST_NAME}")
        except FileNotFoundError:
            return {}
        data = json.loads(raw)
        return {
            k: FileState(int(v["size"]), v[HASH_KEY], v.get("mtime_ns"))
            for k, v in data["files"].items()
        }

    async def write_manifest(self, prefix: str, files: dict[str, FileState]) -> None:
        body = {
            "version": 1,
            "files": {
                k: {"size": s.size, HASH_KEY: s.sha256, "mtime_ns": s.mtime_ns}
                for k, s in sorted(files.items())
            },
        }
        data = json.dumps(body, separators=(",", ":")).encode()
        await self.fs._pipe_file(f"{_strip(prefix)}/{MANIFEST_NAME}", data)

    async def object_hash(self, path: str) -> str | None:
        """The SHA-256 kept in the object's metadata (one HEAD), if it has one."""
        meta = await self.fs._metadata(path, refresh=True)
        value = meta.get(HASH_KEY)
        return str(value) if value else None


@dataclass
class _Plan:
    transfer: list[str]
    unchanged: list[str]
    delete: list[str]


class _Syncer:
    def __init__(
        self,
        source: str,
        destination: str,
        *,
        concurrency: int,
        retries: int,
        backoff: float,
        delete: bool,
        dry_run: bool,
        progress: bool,
    ) -> None:
        self.source = source
        self.destination = destination
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = backoff
        self.delete = delete
        self.dry_run = dry_run
        self.progress = progress
        self.report = SyncReport(source, destination, dry_run=dry_run)
        self.dst_manifest: dict[str, FileState] = {}
        self._manifest_dirty = False
        self._manifest_written = time.monotonic()

    # ------------------------------------------------------------------ listing

    async def _source_tree(self, s3: _S3 | None) -> dict[str, FileState]:
        if s3 is not None and is_s3(self.source):
            files = await s3.tree(self.source)
            known = await s3.read_manifest(self.source)
            for key, state in files.items():
                entry = known.get(key)
                if entry is not None and entry.size == state.size:
                    state.sha256 = entry.sha256
            return files
        root = Path(self.source)
        if not root.is_dir():
            raise SyncError(f"{self.source}: not a folder (sync copies folder trees)")
        return await asyncio.to_thread(_local_tree, root)  # hashed in _plan, where needed

    async def _plan(self, s3: _S3 | None, src: dict[str, FileState]) -> _Plan:
        transfer: list[str] = []
        unchanged: list[str] = []
        if s3 is not None and is_s3(self.destination):
            dst = await s3.tree(self.destination)
            self.dst_manifest = {
                k: v for k, v in (await s3.read_manifest(self.destination)).items() if k in dst
            }
            await self._hash_source(src, self.dst_manifest)
            unknown = []
            for key, state in src.items():
                there = dst.get(key)
                if there is None or there.size != state.size:
                    transfer.append(key)
                    continue
                known = self.dst_manifest.get(key)
                if known is not None and known.size == state.size:
                    (unchanged if known.sha256 == state.sha256 else transfer).append(key)
                else:
                    unknown.append(key)  # arrived after the manifest's last write
            hashes = await self._gather(
                [s3.object_hash(f"{_strip(self.destination)}/{k}") for k in unknown]
            )
            for key, digest in zip(unknown, hashes, strict=True):
                if isinstance(digest, str) and digest == src[key].sha256:
                    unchanged.append(key)
                    self.dst_manifest[key] = src[key]
                    self._manifest_dirty = True
                else:
                    transfer.append(key)
            extra = sorted(set(dst) - set(src))
        else:
            await self._hash_source(src, {})
            root = Path(self.destination)
            dst = await asyncio.to_thread(_local_tree, root) if root.is_dir() else {}
            same_size = [k for k, s in src.items() if k in dst and dst[k].size == s.size]
            await asyncio.to_thread(_hash_local, root, same_size, dst)
            for key, state in src.items():
                there = dst.get(key)
                same = there is not None and there.size == state.size
                if same and state.sha256 is None and s3 is not None:
                    state.sha256 = await s3.object_hash(f"{_strip(self.source)}/{key}")
                if same and there is not None and state.sha256 == there.sha256:
                    unchanged.append(key)
                else:
                    transfer.append(key)
            extra = sorted(set(dst) - set(src))
        return _Plan(sorted(transfer), unchanged, extra if self.delete else [])

    async def _hash_source(self, src: dict[str, FileState], known: dict[str, FileState]) -> None:
        """SHA-256 of local source files; a file whose size and mtime equal those recorded
        in the destination's manifest keeps the recorded hash (a re-sync reads no file)."""
        if is_s3(self.source):
            return
        for key, state in src.items():
            entry = known.get(key)
            if (
                entry is not None
                and entry.mtime_ns is not None
                and (entry.size, entry.mtime_ns) == (state.size, state.mtime_ns)
            ):
                state.sha256 = entry.sha256
        await asyncio.to_thread(_hash_local, Path(self.source), list(src), src)

    # ------------------------------------------------------------------ transfers

    async def _gather(self, jobs: list[Awaitable[T]]) -> list[T | BaseException]:
        gate = asyncio.Semaphore(self.concurrency)

        async def bounded(job: Awaitable[T]) -> T | BaseException:
            async with gate:
                try:
                    return await job
                except Exception as err:
                    return err

        return list(await asyncio.gather(*(bounded(j) for j in jobs)))

    async def _with_retries(self, what: str, call: Callable[[], Awaitable[None]]) -> None:
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
                self.report.retries += 1
                delay = self.backoff * (2**attempt) * (0.5 + random.random())
                await asyncio.sleep(min(delay, 20.0))
        raise AssertionError(what)  # the loop always returns or raises

    def _copy_call(
        self, s3: _S3 | None, key: str, state: FileState
    ) -> Callable[[], Awaitable[None]]:
        src, dst = self.source, self.destination
        if s3 is None:
            raise SyncError("sync: one side must be s3://")
        fs = s3.fs
        meta = {"Metadata": {HASH_KEY: state.sha256}} if state.sha256 else {}
        if not is_s3(src):
            local = Path(src) / key
            remote = f"{_strip(dst)}/{key}"
            if state.size <= SMALL_FILE:

                async def upload_small() -> None:
                    data = await asyncio.to_thread(local.read_bytes)
                    await fs._pipe_file(remote, data, **meta)

                return upload_small

            async def upload_large() -> None:
                await fs._put_file(str(local), remote, **meta)

            return upload_large
        if is_s3(dst):

            async def copy() -> None:
                await fs._copy(f"{_strip(src)}/{key}", f"{_strip(dst)}/{key}")

            return copy
        target = Path(dst) / key

        async def download() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            await fs._get_file(f"{_strip(src)}/{key}", str(partial))
            if state.sha256 and await asyncio.to_thread(sha256_file, partial) != state.sha256:
                partial.unlink()
                raise OSError(f"{key}: downloaded content does not match its sha256")
            os.replace(partial, target)

        return download

    async def _transfer(self, s3: _S3 | None, key: str, state: FileState, bar: tqdm) -> None:
        try:
            await self._with_retries(key, self._copy_call(s3, key, state))
        except Exception as err:
            self.report.failed[key] = f"{type(err).__name__}: {err}"
            return
        self.report.transferred.append(key)
        self.report.bytes += state.size
        bar.update(state.size)
        if is_s3(self.destination):
            self.dst_manifest[key] = state
            self._manifest_dirty = True
            await self._maybe_write_manifest(s3)

    async def _maybe_write_manifest(self, s3: _S3 | None, force: bool = False) -> None:
        if s3 is None or not is_s3(self.destination) or not self._manifest_dirty:
            return
        if not force and time.monotonic() - self._manifest_written < MANIFEST_EVERY_S:
            return
        self._manifest_dirty = False
        self._manifest_written = time.monotonic()
        snapshot = dict(self.dst_manifest)
        try:
            await self._with_retries(
                MANIFEST_NAME, lambda: s3.write_manifest(self.destination, snapshot)
            )
        except Exception as err:
            self._manifest_dirty = True
            if force:
                self.report.failed[MANIFEST_NAME] = f"{type(err).__name__}: {err}"

    async def _delete(self, s3: _S3 | None, keys: list[str]) -> None:
        if not keys:
            return
        if s3 is not None and is_s3(self.destination):
            paths = [f"{_strip(self.destination)}/{k}" for k in keys]
            await self._with_retries("delete", lambda: s3.fs._rm(paths))
            for key in keys:
                self.dst_manifest.pop(key, None)
            self._manifest_dirty = True
        else:
            for key in keys:
                (Path(self.destination) / key).unlink()
        self.report.deleted.extend(keys)

    async def run(self) -> SyncReport:
        start = time.perf_counter()
        needs_s3 = is_s3(self.source) or is_s3(self.destination)
        if not needs_s3:
            raise SyncError(f"sync {self.source} {self.destination}: one side must be s3://")
        async with _S3(self.concurrency) as s3:
            src = await self._source_tree(s3)
            plan = await self._plan(s3, src)
            self.report.skipped = len(plan.unchanged)
            for key in plan.unchanged:
                if is_s3(self.destination) and key not in self.dst_manifest:
                    self.dst_manifest[key] = src[key]
                    self._manifest_dirty = True
            if self.dry_run:
                self.report.transferred = plan.transfer
                self.report.bytes = sum(src[k].size for k in plan.transfer)
                self.report.deleted = plan.delete
            else:
                total = sum(src[k].size for k in plan.transfer)
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc="sync",
                    disable=not self.progress or not plan.transfer,
                ) as bar:
                    try:
                        await self._gather(
                            [self._transfer(s3, k, src[k], bar) for k in plan.transfer]
                        )
                        await self._delete(s3, plan.delete)
                    finally:
                        await self._maybe_write_manifest(s3, force=True)
        self.report.transferred.sort()
        self.report.seconds = time.perf_counter() - start
        return self.report


def sync(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    concurrency: int = 64,
    retries: int = 5,
    backoff: float = 0.2,
    delete: bool = False,
    dry_run: bool = False,
    progress: bool = True,
) -> SyncReport:
    """Make ``destination`` hold ``source``'s files (one side or both ``s3://``).

    Unchanged files (same size and SHA-256) are skipped; ``delete`` removes destination files
    the source lacks; ``dry_run`` only plans. Failed files are listed in the report's
    ``failed`` (the others still transfer). Raises :class:`SyncError` for a bad source.
    """
    if concurrency < 1 or retries < 0:
        raise SyncError(
            f"sync: --concurrency must be >= 1 and --retries >= 0, not {concurrency}, {retries}"
        )
    syncer = _Syncer(
        os.fspath(source),
        os.fspath(destination),
        concurrency=concurrency,
        retries=retries,
        backoff=backoff,
        delete=delete,
        dry_run=dry_run,
        progress=progress,
    )
    return asyncio.run(syncer.run())


__all__ = ["MANIFEST_NAME", "SyncError", "SyncReport", "sha256_file", "sync"]
