"""The S3 side of a sync: one async s3fs filesystem, tuned for many small requests.

Per object, botocore's client machinery (parameter validation, checksums, signing, the
User-Agent string, response parsing) costs more CPU than the transfer itself, so the client
skips what a sync does not need: no parameter validation (s3fs and we build the requests),
no optional CRC32 body checksum (SigV4 signs the payload's SHA-256 over HTTP, TLS protects
it over HTTPS, and each object carries its SHA-256 in metadata), a fixed User-Agent string
(botocore otherwise rebuilds its long one twice per request), and listing timestamps parsed
with ``datetime.fromisoformat`` instead of dateutil (4,197 of them cost seconds).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MANIFEST_NAME = ".visionforge-sync.json"
HASH_KEY = "sha256"


@dataclass
class FileState:
    size: int
    sha256: str | None = None
    mtime_ns: int | None = None
    """Of the local source file the hash was computed from (a re-sync trusts the manifest's
    hash while size and mtime are unchanged, so it reads no file)."""


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def strip(url: str) -> str:
    """``s3://bucket/prefix/`` -> ``bucket/prefix`` (s3fs paths)."""
    return url.removeprefix("s3://").rstrip("/")


def fast_timestamp(text: str) -> datetime:
    """ISO 8601 timestamps (ListObjectsV2's LastModified) without dateutil; anything else
    (RFC 822 headers, epochs) goes to botocore's parser."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, TypeError, AttributeError):  # not ISO 8601, or not a string
        from botocore.utils import parse_timestamp

        return parse_timestamp(text)


@functools.cache
def _loader(data_path: str | None) -> Any:
    """botocore's loader of service models, shared by the syncs of a process (loading S3's
    model and endpoint rules costs a few hundred ms of CPU; they never change)."""
    from botocore.loaders import create_loader

    return create_loader(data_path)


def _session() -> Any:
    """An aiobotocore session (standard AWS configuration: credentials, region and endpoint
    are resolved afresh for each sync) whose parsers read listings in one pass
    (:mod:`visionforge_aws.sync_listing`) and timestamps with :func:`fast_timestamp`."""
    from aiobotocore.session import AioSession

    from visionforge_aws.sync_listing import ListingParserFactory

    session = AioSession()
    session.register_component("data_loader", _loader(session.get_config_variable("data_path")))
    parsers = ListingParserFactory()
    parsers.set_parser_defaults(timestamp_parser=fast_timestamp)
    session.register_component("response_parser_factory", parsers)
    return session


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("visionforge-aws")
    except PackageNotFoundError:
        return "0"


def _config(concurrency: int) -> dict[str, Any]:
    import botocore
    from botocore.config import Config

    config: dict[str, Any] = {
        "max_pool_connections": concurrency,
        "retries": {"mode": "standard", "total_max_attempts": 1},  # we retry per file
        "parameter_validation": False,
        "user_agent": f"visionforge-aws-sync/{_version()} botocore/{botocore.__version__}",
    }
    if "request_checksum_calculation" in Config.OPTION_DEFAULTS:  # botocore >= 1.36
        config["request_checksum_calculation"] = "when_required"
        config["response_checksum_validation"] = "when_required"
    return config


async def _awaited(hints: Awaitable[Iterable[str]] | None) -> Iterable[str]:
    return () if hints is None else await hints


def _entries(page: dict[str, Any], start: str) -> dict[str, FileState]:
    """A listing page's files, by name relative to ``start``."""
    files: dict[str, FileState] = {}
    for item in page.get("Contents", []):
        name = item["Key"][len(start) :]
        if name and not name.endswith("/") and name != MANIFEST_NAME:
            files[name] = FileState(int(item["Size"]))
    return files


class S3:
    """The async s3fs filesystem a sync uses, and the few calls it makes."""

    def __init__(self, concurrency: int) -> None:
        import s3fs

        self.fs = s3fs.S3FileSystem(
            asynchronous=True,
            skip_instance_cache=True,
            session=_session(),
            config_kwargs=_config(concurrency),
        )
        self.fs.retries = 1
        self.concurrency = concurrency
        self.client: Any = None

    async def __aenter__(self) -> S3:
        self.client = await self.fs.set_session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:
            await self.client.close()

    async def tree(
        self, prefix: str, hints: Awaitable[Iterable[str]] | None = None
    ) -> dict[str, FileState]:
        """Objects under ``prefix``, by relative key (no HEAD, no s3fs directory cache);
        folder placeholders and the manifest are left out.

        The first page is asked for at once; if there are more, ``hints`` (the relative keys
        expected there, awaited meanwhile) cut the rest into ranges listed in parallel
        (:func:`~visionforge_aws.sync_listing.key_ranges`). The result does not depend on
        the hints, only the number of requests in a row does."""
        from visionforge_aws.sync_listing import PAGE_KEYS, key_ranges

        bucket, _, key = strip(prefix).partition("/")
        start = f"{key}/" if key else ""
        request = {"Bucket": bucket, "Prefix": start, "MaxKeys": PAGE_KEYS}
        page, expected = await asyncio.gather(
            self.fs._call_s3("list_objects_v2", **request), _awaited(hints)
        )
        files = _entries(page, start)
        if not page.get("IsTruncated"):
            return files
        if not page.get("Contents"):  # no key to start ranges after: page by page
            token = page.get("NextContinuationToken")
            files.update(await self._list_range(bucket, start, None, None, token))
            return files
        after = page["Contents"][-1]["Key"][len(start) :]
        ranges = key_ranges(k for k in expected if k > after)
        ranges[0] = (after, ranges[0][1])
        gate = asyncio.Semaphore(self.concurrency)

        async def listed(after: str | None, upto: str | None) -> dict[str, FileState]:
            async with gate:
                return await self._list_range(bucket, start, after, upto)

        for part in await asyncio.gather(*(listed(a, b) for a, b in ranges)):
            files.update(part)
        return files

    async def _list_range(
        self,
        bucket: str,
        start: str,
        after: str | None,
        upto: str | None,
        token: str | None = None,
    ) -> dict[str, FileState]:
        """The objects under ``start`` with ``after < name <= upto`` (relative names; None:
        unbounded), and those on the last page past ``upto``: one ListObjectsV2 page after
        the other (from ``token`` if given)."""
        from visionforge_aws.sync_listing import PAGE_KEYS

        last = None if upto is None else start + upto
        request: dict[str, Any] = {"Bucket": bucket, "Prefix": start, "MaxKeys": PAGE_KEYS}
        if token is not None:
            request["ContinuationToken"] = token
        elif after is not None:
            request["StartAfter"] = start + after
        files: dict[str, FileState] = {}
        while True:
            page = await self.fs._call_s3("list_objects_v2", **request)
            files.update(_entries(page, start))  # keys past ``last`` are right too
            contents = page.get("Contents", [])
            ended = last is not None and bool(contents) and contents[-1]["Key"] >= last
            token = page.get("NextContinuationToken")
            if ended or not page.get("IsTruncated") or not token:
                return files
            request = {**request, "ContinuationToken": token}

    async def read_manifest(self, prefix: str) -> dict[str, FileState]:
        try:
            raw = await self.get_bytes(f"{strip(prefix)}/{MANIFEST_NAME}")
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
        await self.fs._pipe_file(f"{strip(prefix)}/{MANIFEST_NAME}", data)

    async def object_hash(self, path: str) -> str | None:
        """The SHA-256 kept in the object's metadata (one HEAD), if it has one."""
        meta = await self.fs._metadata(path, refresh=True)
        value = meta.get(HASH_KEY)
        return str(value) if value else None

    async def get_bytes(self, path: str) -> bytes:
        """An object's content in one GET (s3fs's ``cat_file`` HEADs it first)."""
        bucket, _, key = path.partition("/")
        answer = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
        async with answer["Body"] as body:
            data: bytes = await body.read()
        return data

    async def put_bytes(self, path: str, data: bytes, sha256: str) -> None:
        """One PUT (``data`` below s3fs's multipart threshold) carrying its hash."""
        await self.fs._pipe_file(path, data, Metadata={HASH_KEY: sha256})

    async def put_file(self, local: str, path: str, sha256: str) -> None:
        """A large file, as s3fs's multipart upload, carrying its hash."""
        await self.fs._put_file(local, path, Metadata={HASH_KEY: sha256})
