"""fsspec-based I/O: one set of functions for local paths and URLs (s3://, gs://, file://)."""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shutil
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
    with atomic_local_path(target, needed=len(data)) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_FULL_SLACK = 1 << 20  # less free than this after a failed write: the device filled up


def free_space(path: PathLike) -> tuple[int, int] | None:
    """(free, total) bytes of the filesystem holding ``path`` (or its nearest existing
    parent), or None when it cannot be told."""
    probe = Path(os.fspath(path)).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return None
    return usage.free, usage.total


def _size(count: int | None) -> str:
    if count is None:
        return "an unknown amount"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno is not None:
        return f"{errno.errorcode.get(err.errno, err.errno)}: {err.strerror}"
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}".rstrip(": ")


def disk_full_error(target: PathLike, needed: int | None, had: int | None, reason: str) -> str:
    """One line: which file, that its device is full, how much it needed and had."""
    name = Path(os.fspath(target)).name
    return (
        f"{os.fspath(target)}: no space left on device ({reason}): writing it needs about "
        f"{_size(needed)}, the file system had {_size(had)} free; any earlier {name} is "
        "intact. Free some space or write elsewhere (e.g. --set trainer.output=...)"
    )


@contextlib.contextmanager
def write_errors(target: PathLike, *, needed: int | None = None) -> Iterator[None]:
    """Turn a failed local write of ``target`` into a one-line :class:`StorageError`.

    A full device (ENOSPC/EDQUOT/EFBIG, or a writer such as ``torch.save`` that fails while
    the file system has no room left) says so, with the bytes ``needed`` and the free space
    the file system had before; other OS errors name the file and the error. Anything else
    is re-raised as it is.
    """
    before = free_space(target)
    had = before[0] if before else None
    if needed is not None and had is not None and needed > had:
        raise StorageError(disk_full_error(target, needed, had, "checked before writing"))
    try:
        yield
    except StorageError:
        raise
    except (OSError, RuntimeError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            if err.errno in DISK_FULL_ERRNOS:
                raise StorageError(disk_full_error(target, needed, had, _reason(err))) from err
            raise StorageError(f"{os.fspath(target)}: could not write it ({_reason(err)})") from err
        now = free_space(target)
        if now is not None and now[0] < _FULL_SLACK:
            raise StorageError(disk_full_error(target, needed, had, _reason(err))) from err
        raise


@contextlib.contextmanager
def atomic_local_path(target: PathLike, *, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    ``needed`` (bytes, when known) is checked against the free space first; a failed write
    raises a :class:`StorageError` naming ``target`` (:func:`write_errors`) and leaves any
    earlier ``target`` as it was.
    """
    final = Path(target)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with write_errors(final, needed=needed):
            final.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def put_file(local: PathLike, url: PathLike) -> None:
    """Copy a local file to ``url`` (a plain copy when ``url`` is local)."""
    if not is_remote(url):
        target = os.fspath(url).removeprefix("file://")
        size = os.path.getsize(local)
        with (
            atomic_local_path(target, needed=size) as tmp,
            open(local, "rb") as src,
            open(tmp, "wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
        return
    fs, path = filesystem(url)
    fs.put_file(os.fspath(local), path)


@contextlib.contextmanager
def local_copy(url: PathLike) -> Iterator[Path]:
    """A local path holding ``url``'s content while the ``with`` block runs.

    A local path (or ``file://`` URL) is yielded as it is; a remote file is downloaded into
    a temporary folder that is removed when the block ends, so nothing is left behind.
    """
    text = os.fspath(url)
    if not is_remote(text):
        path = Path(text.removeprefix("file://"))
        if not path.exists():
            raise StorageError(f"{text}: file not found")
        yield path
        return
    fs, remote = filesystem(text)
    with backend_errors(text):
        if not fs.exists(remote):
            raise StorageError(f"{text}: file not found")
    with tempfile.TemporaryDirectory(prefix="visionforge-copy-") as folder:
        target = Path(folder) / posixpath.basename(remote.rstrip("/"))
        with backend_errors(text):
            fs.get_file(remote, os.fspath(target))
        yield target
