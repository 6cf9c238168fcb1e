"""Storage over local paths, fsspec memory:// and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from visionforge import lineage, storage
from visionforge.errors import StorageError


def test_local_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "file.bin"
    storage.write_bytes_atomic(target, b"one")
    storage.write_bytes_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_atomic_path_is_cleaned_on_error(tmp_path: Path) -> None:
    target = tmp_path / "x.ckpt"
    with pytest.raises(RuntimeError), storage.atomic_local_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []


def test_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="absent.txt: file not found"):
        storage.read_bytes(tmp_path / "absent.txt")
    with (
        pytest.raises(StorageError, match="memory://nowhere/x: file not found"),
        storage.local_copy("memory://nowhere/x"),
    ):
        pass


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_missing_backend_says_what_to_install() -> None:
    with pytest.raises(StorageError, match=r"gs://bucket/r.yaml: cannot open gs:// URLs: .*gcsfs"):
        storage.read_bytes("gs://bucket/r.yaml")


def test_memory_url_round_trip_and_manifest() -> None:
    url = "memory://vf-test/artifact.bin"
    storage.write_bytes_atomic(url, b"payload")
    assert storage.read_bytes(url) == b"payload"
    with storage.local_copy(url) as local:
        assert local.read_bytes() == b"payload"
    manifest = lineage.write_manifest(url, "dataset", metrics={"n": 1})
    assert lineage.read_manifest(url)["id"] == manifest["id"]
    assert manifest["size"] == 7


@pytest.mark.slow
def test_local_copy_leaves_no_temp_folder_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    url = "memory://vf-test/weights.pt"
    storage.write_bytes_atomic(url, b"weights")
    for _ in range(3):
        with storage.local_copy(url) as local:
            assert local.name == "weights.pt"
            assert local.read_bytes() == b"weights"
            assert local.is_relative_to(temp)
        assert not local.exists()
    with pytest.raises(RuntimeError), storage.local_copy(url):
        raise RuntimeError("the caller fails while reading")
    assert list(temp.iterdir()) == []
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"local")
    with storage.local_copy(f"file://{plain}") as local:
        assert local == plain
    assert plain.exists()  # a local file is used in place, never removed


def test_s3_round_trip_with_lineage(s3_bucket: str, tmp_path: Path) -> None:
    local = tmp_path / "model.ckpt"
    local.write_bytes(b"\x00" * 4096)
    parent = storage.join(s3_bucket, "runs", "a", "data.json")
    storage.write_bytes_atomic(parent, b"{}")
    lineage.write_manifest(parent, "dataset")
    url = storage.join(s3_bucket, "runs", "a", "model.ckpt")
    storage.put_file(local, url)
    assert storage.exists(url)
    lineage.write_manifest(url, "checkpoint", parents=[parent], metrics={"top1": 0.5})
    chain = lineage.lineage_chain(url)
    assert [m["kind"] for m in chain] == ["checkpoint", "dataset"]
    assert chain[0]["size"] == 4096 and chain[0]["parents"][0]["id"] == chain[1]["id"]
    assert "checkpoint" in lineage.format_chain(chain)


def test_backend_errors_become_storage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoCredentialsError(Exception):
        __module__ = "botocore.exceptions"

    def refuse(*args: object, **kwargs: object) -> None:
        raise NoCredentialsError("Unable to locate credentials")

    fs, _ = storage.filesystem("memory://creds/x")
    monkeypatch.setattr(type(fs), "open", refuse)
    with pytest.raises(StorageError, match=r"memory://creds/x: NoCredentialsError: .*credentials"):
        storage.open_file("memory://creds/x")


def read_error_as(uid: int, path: Path) -> str:
    """The StorageError message of ``storage.read_bytes(path)`` in a forked child running
    as ``uid`` (root reads any file, so the check needs an unprivileged user)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to uid, try the read, report, exit without cleanup
        os.close(read_end)
        message = "read succeeded"
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            storage.read_bytes(path)
        except StorageError as err:
            message = str(err)
        except BaseException as err:
            message = f"unexpected {type(err).__name__}: {err}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        message = reader.read().decode()
    os.waitpid(pid, 0)
    return message


def test_permission_denied_names_path() -> None:
    """A file its reader may not open; as root (how CI runs) the read is done by a forked
    child that switched to the unprivileged user ``nobody``."""
    folder = Path(tempfile.mkdtemp())  # not under tmp_path: nobody must reach the file
    try:
        folder.chmod(0o755)
        locked = folder / "locked.txt"
        locked.write_text("x")
        locked.chmod(0)
        if os.geteuid() == 0:
            message = read_error_as(65534, locked)
        else:
            with pytest.raises(StorageError) as caught:
                storage.read_bytes(locked)
            message = str(caught.value)
        assert message.startswith(f"{locked}: permission denied ("), message
    finally:
        shutil.rmtree(folder)
