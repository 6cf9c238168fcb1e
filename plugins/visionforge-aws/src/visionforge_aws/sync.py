"""Sync a folder tree between a local path and S3 (either side), or between two S3 prefixes.

Transfers run concurrently through s3fs's async API: ``concurrency`` coroutines, spread over
``processes`` processes (:mod:`visionforge_aws.sync_workers`), each with an event loop and a
connection pool of its own. Unchanged files are skipped by size and
SHA-256: every object we upload carries its hash in its metadata (``x-amz-meta-sha256``) and
the destination prefix keeps a *sync manifest* (``.visionforge-sync.json``: key -> size,
sha256, the source file's mtime), so change detection is one listing and one GET instead of a
HEAD per object (ListObjectsV2 returns no metadata, and a multipart ETag is no MD5), and a
re-sync reads no unchanged local file. A file is read once: its hash is computed from the
bytes that are sent. The manifest is rewritten every few seconds and at the end, and objects
that arrived after its last write (a sync killed with -9) are recognised by their metadata,
so an interrupted sync resumes without re-sending what arrived.

Each file is retried with exponential backoff; a file that keeps failing is reported and never
cancels the others. Credentials, region and endpoint come from the standard AWS configuration
(environment, ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, profiles, instance roles).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from visionforge.errors import StorageError
from visionforge_aws.sync_s3 import MANIFEST_NAME, S3, FileState, is_s3, strip
from visionforge_aws.sync_transfer import Mover, pool, sha256_file
from visionforge_aws.sync_workers import Outcome, Workers, attempt, process_count, shards

MANIFEST_EVERY_S = 5.0


class SyncError(StorageError):
    """A sync could not start (bad source or destination)."""


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
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as executor:
        for key, digest in zip(
            todo, executor.map(lambda k: sha256_file(root / k), todo), strict=True
        ):
            files[key].sha256 = digest


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
        processes: int | None,
        retries: int,
        backoff: float,
        delete: bool,
        dry_run: bool,
        progress: bool,
    ) -> None:
        self.source = source
        self.destination = destination
        self.concurrency = concurrency
        self.processes = processes
        self.delete = delete
        self.dry_run = dry_run
        self.progress = progress
        self.report = SyncReport(source, destination, dry_run=dry_run)
        self.mover = Mover(source, destination, retries=retries, backoff=backoff)
        self.dst_manifest: dict[str, FileState] = {}
        self._manifest_dirty = False
        self._manifest_written = time.monotonic()

    # ------------------------------------------------------------------ listing

    async def _walk(self, url: str) -> dict[str, FileState]:
        root = Path(url)
        return await asyncio.to_thread(_local_tree, root) if root.is_dir() else {}

    async def _listing(
        self, s3: S3, url: str, other: Awaitable[dict[str, FileState]] | None = None
    ) -> dict[str, FileState]:
        """Files under S3 ``url``, with the sizes and hashes its manifest records; the
        manifest's keys (else ``other``'s, the local side's) guide a parallel listing."""
        from botocore.exceptions import ConnectionError as EndpointError

        manifest = asyncio.ensure_future(s3.read_manifest(url))

        async def hints() -> Iterable[str]:
            known = await manifest
            return known or (await other if other is not None else {})

        try:
            files, known = await asyncio.gather(s3.tree(url, hints()), manifest)
        except (FileNotFoundError, PermissionError) as err:
            raise SyncError(f"{url}: cannot list it ({err}); check the bucket and access") from err
        except (EndpointError, OSError) as err:
            raise SyncError(
                f"{url}: cannot reach S3 ({type(err).__name__}: {err}); check the endpoint "
                "(AWS_ENDPOINT_URL) and the network"
            ) from err
        for key, state in files.items():
            entry = known.get(key)
            if entry is not None and entry.size == state.size:
                state.sha256, state.mtime_ns = entry.sha256, entry.mtime_ns
        return files

    async def _trees(self, s3: S3) -> tuple[dict[str, FileState], dict[str, FileState]]:
        """(source files, destination files)."""
        if is_s3(self.source) and is_s3(self.destination):
            src, dst = await asyncio.gather(
                self._listing(s3, self.source), self._listing(s3, self.destination)
            )
            return src, dst
        local_url, remote_url = (
            (self.source, self.destination)
            if is_s3(self.destination)
            else (self.destination, self.source)
        )
        walk = asyncio.ensure_future(self._walk(local_url))
        try:
            remote = await self._listing(s3, remote_url, walk)
        finally:
            local = await walk
        return (local, remote) if local_url == self.source else (remote, local)

    async def _plan(self, s3: S3) -> tuple[dict[str, FileState], _Plan]:
        if not is_s3(self.source) and not Path(self.source).is_dir():
            raise SyncError(f"{self.source}: not a folder (sync copies folder trees)")
        src, dst = await self._trees(s3)
        if is_s3(self.destination):
            self.dst_manifest = {k: v for k, v in dst.items() if v.sha256}
        same_size = [k for k, s in src.items() if k in dst and dst[k].size == s.size]
        if not is_s3(self.source):
            for key in same_size:  # unchanged size and mtime: the recorded hash holds
                there, here = dst[key], src[key]
                if there.mtime_ns is not None and there.mtime_ns == here.mtime_ns:
                    here.sha256 = there.sha256
            await asyncio.to_thread(_hash_local, Path(self.source), same_size, src)
        if not is_s3(self.destination):
            await asyncio.to_thread(_hash_local, Path(self.destination), same_size, dst)
        # same size but no hash on record (arrived after the manifest's last write): the
        # object's metadata tells, one HEAD each
        for side, url in ((src, self.source), (dst, self.destination)):
            if is_s3(url):
                await self._hash_from_metadata(s3, url, side, same_size)
        unchanged = [k for k in same_size if src[k].sha256 and src[k].sha256 == dst[k].sha256]
        kept = set(unchanged)
        transfer = sorted(k for k in src if k not in kept)
        extra = sorted(set(dst) - set(src)) if self.delete else []
        if is_s3(self.destination):
            for key in unchanged:
                if self.dst_manifest.get(key) != src[key]:
                    self.dst_manifest[key] = src[key]
                    self._manifest_dirty = True
        return src, _Plan(transfer, unchanged, extra)

    async def _hash_from_metadata(
        self, s3: S3, url: str, files: dict[str, FileState], keys: list[str]
    ) -> None:
        """Fill in the hash of ``keys`` without one from their objects' metadata (HEADs)."""
        unknown = [k for k in keys if files[k].sha256 is None]
        root = strip(url)
        hashes = await pool(unknown, lambda k: s3.object_hash(f"{root}/{k}"), self.concurrency)
        for key, digest in zip(unknown, hashes, strict=True):
            if isinstance(digest, str):
                files[key].sha256 = digest

    # ------------------------------------------------------------------ transfers

    async def _transfer(self, s3: S3, key: str, state: FileState, bar: tqdm) -> None:
        await self._outcome(s3, await attempt(self.mover, s3, key, state), bar)

    async def _outcome(self, s3: S3, outcome: Outcome, bar: tqdm) -> None:
        if outcome.sent is None:
            self.report.failed[outcome.key] = outcome.error or "not transferred"
        else:
            await self._arrived(s3, outcome.key, outcome.sent, bar)

    async def _arrived(self, s3: S3, key: str, sent: FileState, bar: tqdm) -> None:
        """Count a file that arrived and record it in the destination's manifest."""
        self.report.transferred.append(key)
        self.report.bytes += sent.size
        bar.update(sent.size)
        if is_s3(self.destination):
            self.dst_manifest[key] = sent
            self._manifest_dirty = True
            await self._maybe_write_manifest(s3)

    async def _maybe_write_manifest(self, s3: S3, force: bool = False) -> None:
        if not is_s3(self.destination) or not self._manifest_dirty:
            return
        if not force and time.monotonic() - self._manifest_written < MANIFEST_EVERY_S:
            return
        self._manifest_dirty = False
        self._manifest_written = time.monotonic()
        snapshot = dict(self.dst_manifest)
        try:
            await self.mover.with_retries(lambda: s3.write_manifest(self.destination, snapshot))
        except Exception as err:
            self._manifest_dirty = True
            if force:
                self.report.failed[MANIFEST_NAME] = f"{type(err).__name__}: {err}"

    async def _delete(self, s3: S3, keys: list[str]) -> None:
        if not keys:
            return
        if is_s3(self.destination):
            paths = [f"{strip(self.destination)}/{k}" for k in keys]
            await self.mover.with_retries(lambda: s3.fs._rm(paths))
            for key in keys:
                self.dst_manifest.pop(key, None)
            self._manifest_dirty = True
        else:
            for key in keys:
                (Path(self.destination) / key).unlink()
        self.report.deleted.extend(keys)

    async def _planned(self) -> tuple[dict[str, FileState], _Plan]:
        async with S3(self.concurrency) as s3:
            return await self._plan(s3)

    async def _move(
        self, own: list[str], src: dict[str, FileState], plan: _Plan, workers: Workers
    ) -> None:
        """Transfer ``own`` here while the workers transfer theirs; delete; write the
        manifest (also when interrupted)."""
        concurrency = workers.concurrency  # this process's share, as each worker's
        async with S3(concurrency) as s3:
            with tqdm(
                total=sum(src[k].size for k in plan.transfer),
                unit="B",
                unit_scale=True,
                desc="sync",
                disable=not self.progress or not plan.transfer,
            ) as bar:
                try:
                    here = pool(own, lambda k: self._transfer(s3, k, src[k], bar), concurrency)
                    there = asyncio.gather(
                        *(
                            workers.drain(i, lambda o: self._outcome(s3, o, bar))
                            for i in range(len(workers.parts))
                        )
                    )
                    _, retries = await asyncio.gather(here, there)
                    self.report.retries += sum(retries)
                    await self._delete(s3, plan.delete)
                finally:
                    await self._maybe_write_manifest(s3, force=True)

    def run(self) -> SyncReport:
        start = time.perf_counter()
        if not (is_s3(self.source) or is_s3(self.destination)):
            raise SyncError(f"sync {self.source} {self.destination}: one side must be s3://")
        src, plan = asyncio.run(self._planned())
        self.report.skipped = len(plan.unchanged)
        if self.dry_run:
            self.report.transferred = plan.transfer
            self.report.bytes = sum(src[k].size for k in plan.transfer)
            self.report.deleted = plan.delete
        elif plan.transfer or plan.delete or self._manifest_dirty:
            count = process_count(self.processes, len(plan.transfer))
            own, *others = shards({k: src[k].size for k in plan.transfer}, count)
            # forked here, between the event loops: nothing of ours is running
            with Workers(
                [[(k, src[k]) for k in part] for part in others],
                mover=self.mover,
                concurrency=-(-self.concurrency // count),
            ) as workers:
                asyncio.run(self._move(own, src, plan, workers))
        self.report.retries += self.mover.retried
        self.report.transferred.sort()
        self.report.seconds = time.perf_counter() - start
        return self.report


def sync(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    concurrency: int = 64,
    processes: int | None = None,
    retries: int = 5,
    backoff: float = 0.2,
    delete: bool = False,
    dry_run: bool = False,
    progress: bool = True,
) -> SyncReport:
    """Make ``destination`` hold ``source``'s files (one side or both ``s3://``).

    Unchanged files (same size and SHA-256) are skipped; ``delete`` removes destination files
    the source lacks; ``dry_run`` only plans. ``concurrency`` transfers run at once, spread
    over ``processes`` processes (default: one per CPU, for syncs of at least 256 files per
    process). Failed files are listed in the report's ``failed`` (the others still transfer).
    Raises :class:`SyncError` for a bad source.
    """
    if concurrency < 1 or retries < 0 or (processes is not None and processes < 1):
        raise SyncError(
            "sync: --concurrency and --processes must be >= 1 and --retries >= 0, not "
            f"{concurrency}, {processes}, {retries}"
        )
    syncer = _Syncer(
        os.fspath(source),
        os.fspath(destination),
        concurrency=concurrency,
        processes=processes,
        retries=retries,
        backoff=backoff,
        delete=delete,
        dry_run=dry_run,
        progress=progress,
    )
    return syncer.run()


__all__ = ["MANIFEST_NAME", "SyncError", "SyncReport", "sha256_file", "sync"]
