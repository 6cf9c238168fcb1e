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

import functools
import json
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
    are resolved afresh for each sync) whose parsers use :func:`fast_timestamp`."""
    from aiobotocore.session import AioSession

    session = AioSession()
    session.register_component("data_loader", _loader(session.get_config_variable("data_path")))
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=fast_timestamp
    )
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
        self.client: Any = None

    async def __aenter__(self) -> S3:
        self.client = await self.fs.set_session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:
            await self.client.close()

    async def tree(self, prefix: str) -> dict[str, FileState]:
        """Objects under ``prefix``, by relative key: one paginated ListObjectsV2 (no HEAD,
        no s3fs directory cache); folder placeholders and the manifest are left out."""
        bucket, _, key = strip(prefix).partition("/")
        start = f"{key}/" if key else ""
        files: dict[str, FileState] = {}
        page: dict[str, Any] = {"IsTruncated": True}
        while page.get("IsTruncated"):
            token = page.get("NextContinuationToken")
            more = {"ContinuationToken": token} if token else {}
            page = await self.fs._call_s3("list_objects_v2", Bucket=bucket, Prefix=start, **more)
            for item in page.get("Contents", []):
                name = item["Key"][len(start) :]
                if name and not name.endswith("/") and name != MANIFEST_NAME:
                    files[name] = FileState(int(item["Size"]))
        return files

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
