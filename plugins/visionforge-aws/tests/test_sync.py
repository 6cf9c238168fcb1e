"""S3 sync against a real S3 server (SeaweedFS), directly and through a fault-injecting proxy."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import fsspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from visionforge import cli
from visionforge_aws import sync_workers
from visionforge_aws.sync import MANIFEST_NAME, SyncError, SyncReport, sync
from visionforge_aws.sync_workers import FILES_PER_PROCESS, WORKER_NAME, process_count, shards


def make_tree(root: Path, count: int = 40, size: int = 3000) -> dict[str, bytes]:
    files = {}
    for i in range(count):
        key = f"images/{i % 4}/img_{i:04d}.jpg"
        files[key] = hashlib.sha256(f"{root.name}{i}".encode()).digest() * (size // 32)
    files["annotations/train.json"] = json.dumps({"images": count}).encode()
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files


def remote(bucket: str) -> dict[str, bytes]:
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    root = bucket.removeprefix("s3://") + "/data"
    return {
        p[len(root) + 1 :]: fs.cat_file(p) for p in fs.find(root) if not p.endswith(MANIFEST_NAME)
    }


@pytest.mark.slow
def test_upload_resync_change_dry_run_delete(s3_bucket: str, tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    dst = f"{s3_bucket}/data"
    first = sync(tmp_path, dst, progress=False)
    assert first.ok and first.transferred == sorted(files) and first.skipped == 0
    assert first.bytes == sum(len(d) for d in files.values())
    assert remote(s3_bucket) == files
    again = sync(tmp_path, dst, progress=False)
    assert again.transferred == [] and again.skipped == len(files)
    # same size, new content: the hash tells
    changed = "images/1/img_0001.jpg"
    (tmp_path / changed).write_bytes(b"\x01" * len(files[changed]))
    (tmp_path / "new.txt").write_text("new")
    planned = sync(tmp_path, dst, dry_run=True, progress=False)
    assert planned.transferred == sorted([changed, "new.txt"])
    assert remote(s3_bucket) == files  # a dry run changes nothing
    sync(tmp_path, dst, progress=False)
    (tmp_path / "new.txt").unlink()
    kept = sync(tmp_path, dst, progress=False)
    assert kept.deleted == [] and "new.txt" in remote(s3_bucket)
    pruned = sync(tmp_path, dst, delete=True, progress=False)
    assert pruned.deleted == ["new.txt"] and "new.txt" not in remote(s3_bucket)
    assert remote(s3_bucket)[changed] == b"\x01" * len(files[changed])


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_download_and_redownload(s3_bucket: str, tmp_path: Path, processes: int) -> None:
    files = make_tree(tmp_path / "up")
    up = sync(tmp_path / "up", f"{s3_bucket}/data", processes=processes, progress=False)
    assert up.ok and len(up.transferred) == len(files), up
    down = sync(f"{s3_bucket}/data", tmp_path / "down", processes=processes, progress=False)
    assert down.ok and down.transferred == sorted(files)
    assert {k: (tmp_path / "down" / k).read_bytes() for k in files} == files
    assert not (tmp_path / "down" / MANIFEST_NAME).exists()
    assert sync(f"{s3_bucket}/data", tmp_path / "down", progress=False).skipped == len(files)


def flaky(key: str, attempt: int) -> str | None:
    """Deterministic faults: a key fails its first 0-2 PUTs, in three different ways."""
    pattern = zlib.crc32(key.encode()) % 4
    return ("503", "drop", "drop-after")[attempt] if attempt < pattern else None


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 3])
def test_faults_are_retried_and_everything_arrives(
    s3_bucket: str, tmp_path: Path, proxied: Any, processes: int
) -> None:
    files = make_tree(tmp_path, count=60)
    proxied.faults = flaky
    dst = f"{s3_bucket}/data"
    report = sync(tmp_path, dst, processes=processes, backoff=0.05, progress=False)
    assert report.ok, report.failed
    assert set(proxied.injected) == {"503", "drop", "drop-after"}
    # every 503 is retried by us; a dropped connection is sometimes retried by aiohttp itself
    # (a stale keep-alive connection), below the layer that counts
    counts = (report.retries, dict(proxied.injected), dict(proxied.requests))
    assert proxied.injected["503"] <= report.retries <= sum(proxied.injected.values()), counts
    assert report.transferred == sorted(files)
    assert remote(s3_bucket) == files
    assert sync(tmp_path, f"{s3_bucket}/data", progress=False).skipped == len(files)


@pytest.mark.slow
def test_a_failing_file_is_reported_and_the_rest_arrive(
    s3_bucket: str, tmp_path: Path, proxied: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    files = make_tree(tmp_path, count=20)
    bad = "images/2/img_0006.jpg"
    proxied.faults = lambda key, n: "503" if key.endswith(bad) else None
    dst = f"{s3_bucket}/data"
    code = cli.main(["aws", "sync", str(tmp_path), dst, "--retries", "2", "--quiet"])
    assert code == 1
    captured = capsys.readouterr()
    assert f"failed: {bad}: " in captured.err
    assert "failed 1" in captured.out
    assert proxied.puts[f"/{dst.removeprefix('s3://')}/{bad}"] == 3  # 1 try + 2 retries
    arrived = remote(s3_bucket)
    assert bad not in arrived and arrived == {k: v for k, v in files.items() if k != bad}
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    manifest = json.loads(fs.cat_file(f"{dst.removeprefix('s3://')}/{MANIFEST_NAME}"))
    assert bad not in manifest["files"] and len(manifest["files"]) == len(files) - 1


def test_a_dead_worker_s_files_are_failed_and_a_resync_completes(
    s3_bucket: str, tmp_path: Path, proxied: Any
) -> None:
    """SIGKILL of a worker process while one of its PUTs is held in the proxy: the files it
    had not confirmed are reported failed (none reported transferred is missing), and a
    re-sync sends only what did not arrive."""
    files = make_tree(tmp_path, count=40)
    dst = f"{s3_bucket}/data"
    theirs = set(shards({k: len(v) for k, v in files.items()}, 2)[1])
    held = min(theirs)
    reached, release = threading.Event(), threading.Event()

    def hold(key: str, attempt: int) -> None:
        if key.endswith(held):
            reached.set()
            release.wait(120)

    proxied.faults = hold
    reports: list[SyncReport] = []
    thread = threading.Thread(
        target=lambda: reports.append(sync(tmp_path, dst, processes=2, progress=False))
    )
    thread.start()
    assert reached.wait(120)
    (worker,) = [p for p in multiprocessing.active_children() if p.name == WORKER_NAME]
    os.kill(worker.pid or 0, signal.SIGKILL)
    release.set()
    thread.join(120)
    (report,) = reports
    assert held in report.failed and "worker process ended" in report.failed[held]
    assert set(report.failed) <= theirs
    assert set(report.transferred) | set(report.failed) == set(files)
    there = remote(s3_bucket)
    assert all(there[k] == files[k] for k in report.transferred)
    proxied.faults = lambda key, attempt: None
    again = sync(tmp_path, dst, processes=2, progress=False)
    assert again.ok and remote(s3_bucket) == files
    assert set(again.transferred) == set(files) - set(there)  # nothing that arrived is re-sent


def test_an_unreachable_endpoint_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    for name in ("AWS_ENDPOINT_URL_S3", "FSSPEC_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(fsspec.config.conf.get("s3", {}), "endpoint_url", raising=False)
    for key, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(key, value)
    make_tree(tmp_path, count=2)
    with pytest.raises(SyncError, match=r"s3://bucket/data: cannot reach S3 .*AWS_ENDPOINT_URL"):
        sync(tmp_path, "s3://bucket/data", progress=False)


@given(
    sizes=st.dictionaries(st.text(min_size=1, max_size=8), st.integers(0, 10**9), max_size=60),
    count=st.integers(1, 9),
)
def test_shards_split_keys_evenly(sizes: dict[str, int], count: int) -> None:
    parts = shards(sizes, count)
    assert len(parts) == count
    assert sorted(k for part in parts for k in part) == sorted(sizes)
    lengths = [len(part) for part in parts]
    assert max(lengths) - min(lengths) <= 1
    totals = [sum(sizes[k] for k in part) for part in parts]
    assert max(totals) - min(totals) <= max(sizes.values(), default=0)


def test_process_count(monkeypatch: pytest.MonkeyPatch) -> None:
    assert process_count(3, 2) == 2 and process_count(3, 0) == 1 and process_count(2, 100) == 2
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr(sync_workers, "usable_cpus", lambda: 4)
    assert process_count(None, FILES_PER_PROCESS - 1) == 1
    assert process_count(None, 3 * FILES_PER_PROCESS) == 3
    assert process_count(None, 10**6) == 4
    monkeypatch.setattr(threading, "active_count", lambda: 2)  # a threaded caller: no fork
    assert process_count(None, 10**6) == 1


@pytest.mark.slow
def test_killed_sync_resumes_without_resending(
    s3_bucket: str, tmp_path: Path, proxied: Any
) -> None:
    src = tmp_path / "src"
    files = make_tree(src, count=80)
    proxied.put_delay = 0.05
    dst = f"{s3_bucket}/data"
    env = {**os.environ}
    command = [sys.executable, "-m", "visionforge.cli", "aws", "sync", str(src), dst]
    process = subprocess.Popen([*command, "--concurrency", "2", "--quiet"], env=env)
    deadline = time.monotonic() + 120
    while len(proxied.puts) < 20:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = remote(s3_bucket)
    assert 0 < len(before) < len(files), (len(before), proxied.puts.total())
    assert all(files[k] == v for k, v in before.items())
    proxied.put_delay = 0.0
    report = sync(src, dst, progress=False)
    assert report.ok
    assert report.transferred == sorted(set(files) - set(before))  # nothing re-sent
    assert report.skipped == len(before)
    assert remote(s3_bucket) == files


@pytest.mark.slow
def test_request_budget_one_put_per_file_and_no_head(
    s3_bucket: str, tmp_path: Path, proxied: Any
) -> None:
    """Change detection costs a listing and the manifest's GET, never a HEAD per object; a
    first sync sends each file in one PUT, a download fetches each in one GET."""
    files = make_tree(tmp_path, count=30)
    dst = f"{s3_bucket}/data"
    first = sync(tmp_path, dst, progress=False)
    assert first.ok and len(first.transferred) == len(files)
    assert proxied.requests["HEAD"] == 0
    object_puts = sum(n for key, n in proxied.puts.items() if not key.endswith(MANIFEST_NAME))
    assert object_puts == len(files)
    proxied.requests.clear()
    again = sync(tmp_path, dst, progress=False)
    assert again.skipped == len(files) and not again.transferred
    assert dict(proxied.requests) == {"GET": 2}  # one listing page and the manifest
    proxied.requests.clear()
    down = sync(dst, tmp_path / "down", progress=False)
    assert down.ok and len(down.transferred) == len(files)
    assert dict(proxied.requests) == {"GET": 2 + len(files)}  # one GET per file, no HEAD


@pytest.mark.slow
def test_download_restores_a_changed_file_of_the_same_size(s3_bucket: str, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "up")
    assert sync(tmp_path / "up", f"{s3_bucket}/data", progress=False).ok
    down = tmp_path / "down"
    assert sync(f"{s3_bucket}/data", down, progress=False).ok
    changed = "images/3/img_0003.jpg"
    (down / changed).write_bytes(b"\x02" * len(files[changed]))
    (down / "local-only.txt").write_text("mine")
    again = sync(f"{s3_bucket}/data", down, progress=False)
    assert again.ok and again.transferred == [changed] and again.skipped == len(files) - 1
    assert (down / changed).read_bytes() == files[changed]
    assert (down / "local-only.txt").exists()  # --delete is off by default
    assert not list(down.rglob("*.partial"))
    pruned = sync(f"{s3_bucket}/data", down, delete=True, progress=False)
    assert pruned.deleted == ["local-only.txt"] and not (down / "local-only.txt").exists()
