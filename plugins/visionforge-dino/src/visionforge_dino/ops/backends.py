"""Choosing the backend of multi-scale deformable attention, and loading compiled ones.

For CUDA tensors the order is ``cuda`` then ``pytorch``; for CPU tensors ``cpu`` then
``pytorch``; other devices use ``pytorch``. ``VISIONFORGE_MSDA_BACKEND=cuda|cpu|pytorch``
(or the ``backend=`` argument) asks for one. A compiled backend that is not built yet is
JIT-built on first use (with a message); one that cannot be built is reported once, as a
warning with the fix, and the next backend is used, so a run never stops for it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from types import ModuleType

import torch

from visionforge_dino.ops import build
from visionforge_dino.ops.errors import MSDAInputError, OpsBuildError

BACKEND_ENV = "VISIONFORGE_MSDA_BACKEND"
CHOICES = ("auto", "cuda", "cpu", "pytorch")


@dataclass
class _State:
    """What this process knows about the compiled backends."""

    loaded: set[str] = field(default_factory=set)
    failures: dict[str, str] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)
    lock: threading.RLock = field(default_factory=threading.RLock)


_STATE = _State()


def _warn_once(message: str) -> None:
    with _STATE.lock:
        if message in _STATE.warned:
            return
        _STATE.warned.add(message)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def requested_backend(explicit: str | None = None) -> str:
    """The backend asked for: ``explicit``, else ``$VISIONFORGE_MSDA_BACKEND``, else auto."""
    if explicit is not None:
        choice, origin = explicit.strip().lower(), "backend="
    else:
        choice, origin = os.environ.get(BACKEND_ENV, "").strip().lower(), f"${BACKEND_ENV}"
    choice = choice or "auto"
    if choice not in CHOICES:
        raise MSDAInputError(
            f"{origin} is {choice!r}: use one of {', '.join(CHOICES)} "
            "(auto picks the compiled kernel of the tensors' device, else pytorch)"
        )
    return choice


def failure(backend: str) -> str | None:
    """Why ``backend`` could not be loaded in this process (``None`` if it did or was not tried)."""
    return _STATE.failures.get(backend)


def is_loaded(backend: str) -> bool:
    """Whether the compiled ``backend`` is loaded in this process."""
    return backend in _STATE.loaded


def ensure_compiled(backend: str) -> bool:
    """Load the compiled ``backend`` from the cache, JIT-building it first if needed.

    Returns False (after one warning with the reason and fix) when it cannot be had.
    """
    with _STATE.lock:
        if backend in _STATE.loaded:
            return True
        if backend in _STATE.failures:
            return False
        try:
            _load_or_build(backend)
        except OpsBuildError as err:
            _STATE.failures[backend] = str(err)
        else:
            _STATE.loaded.add(backend)
            return True
    _warn_once(
        f"visionforge-dino: the {backend} kernel of multi-scale deformable attention is not "
        f"available ({_STATE.failures[backend]}); using the PyTorch reference. "
        "`visionforge dino doctor` shows the details."
    )
    return False


def _load_or_build(backend: str) -> None:
    tools = build.find_toolchain()
    spec = build.build_spec(backend, tools)
    mismatch = build.arch_mismatch(spec)
    if mismatch:
        raise OpsBuildError(mismatch)
    library = build.built_library(spec)
    if library is not None:
        try:
            build.load_library(library)
            return
        except (OSError, RuntimeError) as err:
            raise OpsBuildError(
                f"the cached {backend} kernel {library} does not load ({err}); delete "
                f"{spec.directory} and run `visionforge dino build-ops`"
            ) from err
    missing = build.missing_requirement(backend, tools)
    if missing:
        raise OpsBuildError(missing)
    print(
        f"visionforge-dino: building the {backend} kernel of multi-scale deformable attention "
        f"(first use; {'about a minute per CUDA arch' if backend == 'cuda' else 'about 20 s'}) "
        f"into {spec.directory} ...",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    build.build(spec, tools)
    print(
        f"visionforge-dino: {backend} kernel built in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
        flush=True,
    )


def kernels(backend: str) -> ModuleType:
    """The ``torch.ops`` namespace of a compiled backend (``forward`` and ``backward``)."""
    if not ensure_compiled(backend):
        raise OpsBuildError(f"the {backend} kernel is not available: {failure(backend)}")
    namespace: ModuleType = getattr(torch.ops, build.LIBRARY_NAMES[backend])
    return namespace


@torch.compiler.assume_constant_result
def select_backend(device_type: str, explicit: str | None = None) -> str:
    """The backend that runs for tensors on ``device_type`` ("cuda", "cpu" or "pytorch")."""
    choice = requested_backend(explicit)
    if choice == "pytorch":
        return "pytorch"
    if device_type not in build.COMPILED_BACKENDS:
        if choice != "auto":
            _warn_once(
                f"visionforge-dino: backend {choice!r} cannot run {device_type} tensors; "
                "using the PyTorch reference"
            )
        return "pytorch"
    if choice not in ("auto", device_type):
        _warn_once(
            f"visionforge-dino: backend {choice!r} cannot run {device_type} tensors; using the "
            "PyTorch reference (unset VISIONFORGE_MSDA_BACKEND to use the "
            f"{device_type} kernel)"
        )
        return "pytorch"
    return device_type if ensure_compiled(device_type) else "pytorch"


def reset() -> None:
    """Forget failures and warnings (tests; after installing a compiler)."""
    with _STATE.lock:
        _STATE.failures.clear()
        _STATE.warned.clear()
    build.find_toolchain.cache_clear()
