"""A sync's transfers spread over worker processes.

Per small object, botocore's request machinery (events, endpoint rules, signing, parsing) costs
more CPU than moving the bytes, so one event loop tops out at one core: on a machine with more,
the planned transfers are split into shards, the first stays in the syncing process and each
other goes to a worker process with its own event loop, connection pool and retries. Workers
report every file back (in small batches); the syncing process keeps the report, the progress
bar and the destination's manifest. A file counts as transferred only once its worker says so:
when a worker dies, the files it had not confirmed are reported failed (a re-sync recognises
those that did arrive by their metadata).

Workers are forked where the platform allows it (Linux): no interpreter start-up, no
re-import, and the parent has no event loop or thread of its own running at that moment.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from visionforge.cpus import usable_cpus
from visionforge_aws.sync_s3 import S3, FileState
from visionforge_aws.sync_transfer import Mover, pool

FILES_PER_PROCESS = 256
"""Automatic process counts give each process at least this many files (a process costs
about 50 ms to fork and a connection pool to warm up)."""
MAX_AUTO_PROCESSES = 8
WORKER_NAME = "visionforge-sync-worker"
BATCH_SECONDS = 0.1
"""Workers send their outcomes at least this often (and every 64 files)."""


@dataclass
class Outcome:
    """One file's result: what arrived, or why not."""

    key: str
    sent: FileState | None = None
    error: str | None = None


def process_count(requested: int | None, files: int) -> int:
    """``requested`` (capped at one file each), or automatically one per usable CPU, at most
    :data:`MAX_AUTO_PROCESSES`, with at least :data:`FILES_PER_PROCESS` files each; but only
    this process when it runs other threads (forking them risks a lock held forever)."""
    if requested is not None:
        return max(1, min(requested, files))
    if threading.active_count() > 1:
        return 1
    return max(1, min(usable_cpus(), MAX_AUTO_PROCESSES, files // FILES_PER_PROCESS))


def shards(sizes: dict[str, int], count: int) -> list[list[str]]:
    """The keys of ``sizes`` in ``count`` shards with file counts differing by at most one and
    bytes differing by at most the largest file: largest first, dealt round robin."""
    ordered = sorted(sizes, key=lambda k: (-sizes[k], k))
    return [ordered[i::count] for i in range(count)]


async def attempt(mover: Mover, s3: S3, key: str, state: FileState) -> Outcome:
    """Move one file (with ``mover``'s retries) and say how it went."""
    try:
        return Outcome(key, sent=await mover.move(s3, key, state))
    except Exception as err:
        return Outcome(key, error=f"{type(err).__name__}: {err}")


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if sys.platform == "linux" else methods[0])


def _worker_main(
    conn: Connection, mover: Mover, items: list[tuple[str, FileState]], concurrency: int
) -> None:
    """A worker process: transfer ``items``; send lists of :class:`Outcome`, then
    ``("done", retries)``. Exits quietly when the parent is gone (a broken pipe)."""
    try:
        asyncio.run(_work(conn, mover, items, concurrency))
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        conn.close()


async def _work(
    conn: Connection, mover: Mover, items: list[tuple[str, FileState]], concurrency: int
) -> None:
    retried_before = mover.retried  # this process's copy of the parent's mover
    batch: list[Outcome] = []
    sent_at = time.monotonic()

    def flush() -> None:
        nonlocal sent_at
        if batch:
            conn.send(list(batch))
            batch.clear()
        sent_at = time.monotonic()

    async def one(item: tuple[str, FileState]) -> None:
        batch.append(await attempt(mover, s3, *item))
        if len(batch) >= 64 or time.monotonic() - sent_at > BATCH_SECONDS:
            flush()

    async with S3(concurrency) as s3:
        await pool(items, one, concurrency)
    flush()
    conn.send(("done", mover.retried - retried_before))


class Workers:
    """Worker processes for ``parts`` (one each, moving files as ``mover`` does), started on
    entry, ended on exit."""

    def __init__(
        self, parts: list[list[tuple[str, FileState]]], *, mover: Mover, concurrency: int
    ) -> None:
        self.parts = parts
        self.mover = mover
        self.concurrency = concurrency
        self.processes: list[Any] = []
        self.connections: list[Connection] = []

    def __enter__(self) -> Workers:
        context = _context()
        for part in self.parts:
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_worker_main,
                args=(sender, self.mover, part, self.concurrency),
                name=WORKER_NAME,
                daemon=True,
            )
            process.start()
            sender.close()
            self.processes.append(process)
            self.connections.append(receiver)
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process, conn in zip(self.processes, self.connections, strict=True):
            process.join()
            conn.close()

    async def drain(self, index: int, handle: Callable[[Outcome], Awaitable[None]]) -> int:
        """Hand worker ``index``'s outcomes to ``handle`` until it is done; returns its
        retries. If it dies first, its unconfirmed files are handed over as failed."""
        conn, process = self.connections[index], self.processes[index]
        unconfirmed = {key for key, _ in self.parts[index]}
        while True:
            try:
                message = await asyncio.to_thread(conn.recv)
            except (EOFError, OSError):
                break
            if isinstance(message, tuple):  # ("done", retries)
                return int(message[1])
            for outcome in message:
                unconfirmed.discard(outcome.key)
                await handle(outcome)
        await asyncio.to_thread(process.join)
        reason = (
            f"worker process ended (exit code {process.exitcode}) before confirming this file; "
            "run the sync again"
        )
        for key in sorted(unconfirmed):
            await handle(Outcome(key, error=reason))
        return 0
