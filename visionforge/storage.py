"""fsspec-based I/O: one set of functions for local paths and URLs (s3://, gs://, file://)."""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.registry import known_implementations

from visionforge.errors import StorageError

PathLike = str | os.PathLike[str]


def is_remote(url: PathLike) -> bool:
    """True for URLs with a scheme other than ``file``."""
    text = os.fspath(url)
    return "://" in text and not text.startswith("file://")


def protocol_of(url: PathLike) -> str:
    text = os.fspath(url)
    return text.split("://", 1)[0] if "://" in text else "file"


def filesystem(url: PathLike, **options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and in-filesystem path for ``url``.

    A missing backend (e.g. ``s3fs`` for ``s3://``) gives one line saying what to install.
    """
    text = os.fspath(url)
    try:
        return fsspec.core.url_to_fs(text, **options)
    except ImportError as err:
        proto = protocol_of(text)
        package = known_implementations.get(proto, {}).get("err") or str(err)
        raise StorageError(f"{text}: cannot open {proto}:// URLs: {package}") from None
    except ValueError as err:
        raise StorageError(f"{text}: {err}") from None


def join(base: PathLike, *parts: str) -> str:
    """Join path segments; URLs keep '/' separators."""
    text = os.fspath(base)
    if is_remote(text):
        return posixpath.join(text, *parts)
    return os.path.join(text, *parts)


_BACKEND_MODULES = ("botocore", "aiobotocore", "s3fs", "gcsfs", "adlfs", "google")


@contextlib.contextmanager
def backend_errors(url: PathLike) -> Iterator[None]:
    """Turn a backend's permission/credential/service errors into one-line StorageErrors."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError:
        raise StorageError(f"{os.fspath(url)}: file not found") from None
    except PermissionError as err:
        raise StorageError(
            f"{os.fspath(url)}: permission denied ({err}); check the path's permissions "
            "or your credentials"
        ) from None
    except Exception as err:
        if not type(err).__module__.startswith(_BACKEND_MODULES):
            raise
        raise StorageError(
            f"{os.fspath(url)}: {type(err).__name__}: {err}; check credentials "
            "(e.g. AWS_PROFILE / AWS_ACCESS_KEY_ID) and the endpoint"
        ) from None


def exists(url: PathLike) -> bool:
    fs, path = filesystem(url)
    with backend_errors(url):
        return bool(fs.exists(path))


def makedirs(url: PathLike) -> None:
    fs, path = filesystem(url)
    with backend_errors(url):
        fs.makedirs(path, exist_ok=True)


def open_file(url: PathLike, mode: str = "rb", **kwargs: Any) -> IO[Any]:
    """Open a local file or URL; a missing file raises StorageError naming it."""
    fs, path = filesystem(url)
    with backend_errors(url):
        return fs.open(path, mode, **kwargs)


def read_bytes(url: PathLike) -> bytes:
    with open_file(url, "rb") as f:
        return f.read()


def read_text(url: PathLike) -> str:
    return read_bytes(url).decode("utf-8")


def write_bytes_atomic(url: PathLike, data: bytes) -> None:
    """Write ``data`` so readers see either the old file or the whole new one."""
    if is_remote(url):
        fs, path = filesystem(url)
        fs.pipe_file(path, data)  # a single PUT: object stores never show a partial object
        return
    target = Path(os.fspath(url).removeprefix("file://"))
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_local_path(target) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_local_path(target: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success."""
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def put_file(local: PathLike, url: PathLike) -> None:
    """Copy a local file to ``url`` (a plain copy when ``url`` is local)."""
    if not is_remote(url):
        target = os.fspath(url).removeprefix("file://")
        with atomic_local_path(target) as tmp, open(local, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        return
    fs, path = filesystem(url)
    fs.put_file(os.fspath(local), path)


def local_copy(url: PathLike) -> Path:
    """A local path holding ``url``'s content (the path itself when already local)."""
    text = os.fspath(url)
    if not is_remote(text):
        path = Path(text.removeprefix("file://"))
        if not path.exists():
            raise StorageError(f"{text}: file not found")
        return path
    fs, remote = filesystem(text)
    if not fs.exists(remote):
        raise StorageError(f"{text}: file not found")
    target = (
        Path(tempfile.gettempdir()) / "visionforge-cache" / uuid.uuid4().hex / Path(remote).name
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    fs.get_file(remote, os.fspath(target))
    return target
