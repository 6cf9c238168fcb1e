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

import json
import os
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
    except (ValueError, TypeError):
        from botocore.utils import parse_timestamp

        return parse_timestamp(text)


def _session() -> Any:
    """An aiobotocore session (standard AWS configuration) whose parsers use
    :func:`fast_timestamp`."""
    from aiobotocore.session import AioSession

    session = AioSession()
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
        """Objects under ``prefix`` (one paginated listing), by relative key."""
        root = strip(prefix)
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
            raw = await self.fs._cat_file(f"{strip(prefix)}/{MANIFEST_NAME}")
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

    async def put_bytes(self, path: str, data: bytes, sha256: str) -> None:
        """One PUT (``data`` below s3fs's multipart threshold) carrying its hash."""
        await self.fs._pipe_file(path, data, Metadata={HASH_KEY: sha256})

    async def put_file(self, local: str, path: str, sha256: str) -> None:
        """A large file, as s3fs's multipart upload, carrying its hash."""
        await self.fs._put_file(local, path, Metadata={HASH_KEY: sha256})
