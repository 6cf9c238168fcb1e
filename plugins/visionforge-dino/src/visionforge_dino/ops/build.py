"""Building and loading the compiled kernels with :mod:`torch.utils.cpp_extension`.

Each backend (``cpu``: one C++ translation unit; ``cuda``: the kernels in one CUDA unit,
their host entry points in one C++ unit, compiled in parallel) is
built into its own folder under :func:`cache_root`, named by a key over the torch version,
its CUDA version, the Python ABI and platform, the flags, the CUDA arch list and a hash of
the sources. A finished build leaves ``build.json`` beside the library, so later processes
(and machines sharing the cache) load it without a compiler.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from visionforge_dino.ops.errors import OpsBuildError

COMPILED_BACKENDS = ("cuda", "cpu")
CACHE_ENV = "VISIONFORGE_CACHE_DIR"
ARCH_ENV = "TORCH_CUDA_ARCH_LIST"
# Used when no GPU is visible and TORCH_CUDA_ARCH_LIST is unset: A100, A10/RTX 30xx,
# L4/RTX 40xx, H100, plus PTX so that newer GPUs JIT-compile it.
DEFAULT_ARCH_LIST = "8.0;8.6;8.9;9.0+PTX"
SOURCE_DIR = Path(__file__).parent / "csrc"
_HEADERS = {
    "cpu": ("msda_common.h", "msda_host.h"),
    "cuda": ("msda_common.h", "msda_host.h", "msda_cuda.h", "msda_cuda_kernels.cuh"),
}
_SOURCES = {"cpu": ("msda_cpu.cpp",), "cuda": ("msda_cuda.cpp", "msda_cuda_kernels.cu")}
LIBRARY_NAMES = {"cpu": "visionforge_msda_cpu", "cuda": "visionforge_msda_cuda"}
MARKER = "build.json"
X86_64 = ("x86_64", "amd64")


def cache_root() -> Path:
    """Folder holding the builds: ``$VISIONFORGE_CACHE_DIR/dino-ops``, else the user cache."""
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        base = Path(override).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "visionforge"
    return base / "dino-ops"


@dataclass(frozen=True)
class Toolchain:
    """The compilers found on this machine (``None`` where absent)."""

    cxx: str | None
    cxx_version: str | None
    ninja: str | None
    cuda_home: str | None
    nvcc_version: str | None


def _first_line(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def _nvcc_version(nvcc: Path) -> str | None:
    try:
        done = subprocess.run(
            [str(nvcc), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"release (\d+\.\d+)", done.stdout)
    return match.group(1) if match else None


def _find_cuda_home() -> str | None:
    """A CUDA toolkit root holding both ``bin/nvcc`` and ``include/cuda_runtime.h``.

    torch's own guess takes the parent of the ``nvcc`` on PATH, which is wrong where that
    is a wrapper script (``/usr/local/bin/nvcc``); this one checks the headers too.
    """
    candidates: list[Path] = []
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(name):
            candidates.append(Path(os.environ[name]))
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates += [Path(nvcc).parent.parent, Path(nvcc).resolve().parent.parent]
    candidates.append(Path("/usr/local/cuda"))
    for root in candidates:
        if (root / "bin" / "nvcc").exists() and (root / "include" / "cuda_runtime.h").exists():
            return str(root)
    return None


def visible_capabilities() -> list[tuple[int, int]]:
    """Compute capabilities of the visible GPUs, sorted, without repeats."""
    if not torch.cuda.is_available():
        return []
    return sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})


def _newest_torch_arch() -> tuple[int, int]:
    """The newest GPU arch this torch build ships kernels for (e.g. sm_120 -> (12, 0))."""
    numbers = [
        int(re.sub(r"\D", "", arch[3:]) or 0)
        for arch in torch.cuda.get_arch_list()
        if arch.startswith("sm_")
    ]
    return max(((n // 10, n % 10) for n in numbers if n), default=(9, 0))


def cuda_arch_list() -> tuple[str, str]:
    """The CUDA arch list to build for and where it came from.

    ``$TORCH_CUDA_ARCH_LIST`` wins (``native`` means the visible GPUs); else the visible GPUs,
    clamped to the newest arch this torch knows with PTX on the last, as torch does; else
    :data:`DEFAULT_ARCH_LIST`. Only called for CUDA builds: it initializes CUDA.
    """
    configured = os.environ.get(ARCH_ENV, "").strip()
    if configured and configured != "native":
        return configured, f"${ARCH_ENV}"
    capabilities = visible_capabilities()
    if capabilities:
        newest = _newest_torch_arch()
        archs = sorted({min(capability, newest) for capability in capabilities})
        listed = [f"{major}.{minor}" for major, minor in archs]
        return ";".join(listed) + "+PTX", "visible GPUs"
    return DEFAULT_ARCH_LIST, "default (no GPU visible)"


def arch_mismatch(spec: BuildSpec) -> str | None:
    """Why the CUDA build ``spec`` cannot run on a visible GPU, with the fix; else ``None``
    (always for the CPU build)."""
    if spec.backend != "cuda":
        return None
    arch_list = str(spec.key["arch_list"])
    uncovered = [c for c in visible_capabilities() if not arch_list_covers(arch_list, c)]
    if not uncovered:
        return None
    names = ", ".join(f"sm_{major}{minor}" for major, minor in uncovered)
    wanted = ";".join(f"{major}.{minor}" for major, minor in uncovered)
    return (
        f"the CUDA arch list {arch_list!r} does not cover the visible GPU ({names}): add "
        f"{wanted} to ${ARCH_ENV} or unset it"
    )


def _find_ninja() -> str | None:
    """The ninja binary: on PATH, else the one the ``ninja`` wheel ships."""
    found = shutil.which("ninja")
    if found:
        return found
    try:
        import ninja
    except ImportError:
        return None
    return shutil.which("ninja", path=str(ninja.BIN_DIR))


@functools.cache
def find_toolchain() -> Toolchain:
    """Detect the C++ compiler, ninja and the CUDA toolkit (cached per process)."""
    cxx = shutil.which(os.environ.get("CXX", "").strip() or "c++")
    cuda_home = _find_cuda_home()
    return Toolchain(
        cxx=cxx,
        cxx_version=_first_line([cxx, "--version"]) if cxx else None,
        ninja=_find_ninja(),
        cuda_home=cuda_home,
        nvcc_version=_nvcc_version(Path(cuda_home) / "bin" / "nvcc") if cuda_home else None,
    )


def missing_requirement(backend: str, tools: Toolchain) -> str | None:
    """Why ``backend`` cannot be built here, with the fix; ``None`` when it can."""
    if tools.cxx is None:
        return (
            "no C++ compiler found ($CXX or c++ on PATH): install one "
            "(e.g. `apt-get install g++`) or set CXX"
        )
    if tools.ninja is None:
        return "ninja is not installed: `pip install ninja`"
    if backend == "cpu":
        return None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build: install a CUDA build of torch"
    if tools.cuda_home is None or tools.nvcc_version is None:
        return (
            "no CUDA toolkit found (no nvcc with headers on PATH, in $CUDA_HOME or "
            f"/usr/local/cuda): install CUDA toolkit {torch.version.cuda} or set CUDA_HOME"
        )
    if tools.nvcc_version.split(".")[0] != torch.version.cuda.split(".")[0]:
        return (
            f"nvcc {tools.nvcc_version} ({tools.cuda_home}) does not match the CUDA "
            f"{torch.version.cuda} torch was built with: install CUDA toolkit "
            f"{torch.version.cuda} and point CUDA_HOME at it"
        )
    return None


@dataclass(frozen=True)
class BuildSpec:
    """Everything that defines one build of one backend."""

    backend: str
    sources: tuple[Path, ...]
    cflags: tuple[str, ...]
    cuda_cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    key: dict[str, str] = field(hash=False)

    @property
    def name(self) -> str:
        return LIBRARY_NAMES[self.backend]

    @property
    def digest(self) -> str:
        blob = json.dumps(self.key, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def directory(self) -> Path:
        return cache_root() / f"{self.backend}-torch{torch.__version__}-{self.digest}"

    @property
    def marker(self) -> Path:
        return self.directory / MARKER


def _cpu_isa_flags() -> list[str]:
    """AVX2/FMA/F16C code generation on x86-64 CPUs that have them (every x86 server since
    2013); the flags are part of the cache key, so other CPUs never load such a build."""
    if not sys.platform.startswith("linux") or platform.machine().lower() not in X86_64:
        return []
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags_line = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    if {"avx2", "fma", "f16c"} <= set(flags_line.split()):
        return ["-mavx2", "-mfma", "-mf16c"]
    return []


def _openmp_flags() -> list[str]:
    """``-fopenmp`` where ATen parallelizes with OpenMP (its parallel_for is inline)."""
    info = torch.__config__.parallel_info()
    return ["-fopenmp"] if "parallel backend: OpenMP" in info else []


def sources_digest(backend: str) -> str:
    """sha256 over the backend's sources and the shared headers."""
    digest = hashlib.sha256()
    for name in (*_HEADERS[backend], *_SOURCES[backend]):
        digest.update(name.encode())
        digest.update((SOURCE_DIR / name).read_bytes())
    return digest.hexdigest()


def build_spec(backend: str, tools: Toolchain | None = None) -> BuildSpec:
    """The build of ``backend`` ("cpu" or "cuda") for this torch and toolchain."""
    if backend not in COMPILED_BACKENDS:
        raise ValueError(f"no compiled backend {backend!r}; choose from {COMPILED_BACKENDS}")
    tools = tools or find_toolchain()
    openmp = _openmp_flags() if backend == "cpu" else []
    isa = _cpu_isa_flags() if backend == "cpu" else []
    cflags = ("-O3", *isa, *openmp)
    cuda_cflags = ("-O3",) if backend == "cuda" else ()
    key = {
        "backend": backend,
        "torch": torch.__version__,
        "torch_cuda": str(torch.version.cuda),
        "python": sys.implementation.cache_tag or sys.version,
        "platform": sysconfig.get_platform(),
        "flags": " ".join((*cflags, *cuda_cflags)),
        "sources": sources_digest(backend),
    }
    if backend == "cuda":
        key["arch_list"] = cuda_arch_list()[0]
    return BuildSpec(
        backend=backend,
        sources=tuple(SOURCE_DIR / name for name in _SOURCES[backend]),
        cflags=cflags,
        cuda_cflags=cuda_cflags,
        ldflags=tuple(openmp),
        key=key,
    )


def _read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not (directory / str(record.get("library"))).exists():
        return None
    return record


def _arch_entry_covers(entry: str, capability: tuple[int, int]) -> bool:
    match = re.fullmatch(r"(\d+)\.(\d+)([af]?)(\+PTX)?", entry.strip())
    if not match:
        return False
    arch = (int(match.group(1)), int(match.group(2)))
    if match.group(3) == "a":  # arch-specific: that exact GPU only, PTX included
        return arch == capability
    same_family = arch[0] == capability[0]
    ptx = bool(match.group(4)) and match.group(3) != "f"
    return arch <= capability and (same_family or ptx)


def arch_list_covers(arch_list: str, capability: tuple[int, int]) -> bool:
    """Whether a build for ``arch_list`` runs on a GPU of ``capability``: a binary for the
    same major version and an equal or lower minor one, or PTX for an equal or lower one
    ("a" entries such as 9.0a run on that exact arch only, "f" ones within their major)."""
    return any(_arch_entry_covers(entry, capability) for entry in re.split(r"[;\s]+", arch_list))


def built_library(spec: BuildSpec) -> Path | None:
    """The finished library of ``spec`` in the cache, or ``None``.

    For CUDA, a build for another arch list (say one made ahead of time on a machine
    without a GPU) is used when it covers every visible GPU.
    """
    record = _read_marker(spec.directory)
    if record is not None:
        return spec.directory / str(record["library"])
    capabilities = visible_capabilities() if spec.backend == "cuda" else []
    if not capabilities:
        return None
    wanted = {name: value for name, value in spec.key.items() if name != "arch_list"}
    for directory in sorted(cache_root().glob(f"{spec.backend}-torch*")):
        record = _read_marker(directory)
        key = record.get("key") if record else None
        if not isinstance(key, dict) or record is None:
            continue
        same_build = {name: value for name, value in key.items() if name != "arch_list"}
        arch_list = str(key.get("arch_list", ""))
        if same_build == wanted and all(arch_list_covers(arch_list, c) for c in capabilities):
            return directory / str(record["library"])
    return None


def load_library(library: Path) -> None:
    """Load a built library: its ops appear under ``torch.ops.visionforge_msda_*``."""
    torch.ops.load_library(str(library))


@contextlib.contextmanager
def _build_environment(spec: BuildSpec, tools: Toolchain) -> Iterator[None]:
    """Put ninja on PATH and, for CUDA, point cpp_extension at the detected toolkit and
    arch list, for the duration of one build."""
    from torch.utils import cpp_extension

    saved_env = {name: os.environ.get(name) for name in ("PATH", ARCH_ENV)}
    saved_home = cpp_extension.CUDA_HOME
    if tools.ninja:
        ninja_dir = str(Path(tools.ninja).parent)
        os.environ["PATH"] = os.pathsep.join([ninja_dir, os.environ.get("PATH", "")])
    if spec.backend == "cuda":
        cpp_extension.CUDA_HOME = tools.cuda_home
        os.environ[ARCH_ENV] = str(spec.key["arch_list"])
    try:
        yield
    finally:
        cpp_extension.CUDA_HOME = saved_home
        for name, saved in saved_env.items():
            if saved is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = saved


def _first_error(output: str) -> str | None:
    """The compiler's first error line in a failed build's output (else its last line)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    for line in lines:
        if re.search(r"\berror\b", line) and not line.startswith("Error building extension"):
            return line
    return lines[-1] if lines else None


def build(spec: BuildSpec, tools: Toolchain | None = None, *, verbose: bool = False) -> Path:
    """Compile ``spec`` into its cache folder, load it and return the library path.

    Raises :class:`OpsBuildError` naming what is missing, or the compiler's last lines.
    """
    from torch.utils import cpp_extension

    tools = tools or find_toolchain()
    missing = missing_requirement(spec.backend, tools)
    if missing:
        raise OpsBuildError(f"cannot build the {spec.backend} kernel: {missing}")
    spec.directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        with _build_environment(spec, tools):
            library = cpp_extension.load(
                name=spec.name,
                sources=[str(source) for source in spec.sources],
                extra_cflags=list(spec.cflags),
                extra_cuda_cflags=list(spec.cuda_cflags),
                extra_ldflags=list(spec.ldflags),
                extra_include_paths=[str(SOURCE_DIR)],
                build_directory=str(spec.directory),
                is_python_module=False,
                verbose=verbose,
            )
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as err:
        # cpp_extension raises ValueError for an arch list it does not know
        raise OpsBuildError(
            f"building the {spec.backend} kernel in {spec.directory} failed "
            f"({_first_error(str(err)) or type(err).__name__}); rerun "
            "`visionforge dino build-ops --verbose` to see the compiler output"
        ) from err
    library_path = Path(str(library))
    record = {
        "library": library_path.name,
        "seconds": round(time.perf_counter() - started, 1),
        "key": spec.key,
        "compilers": {"cxx": tools.cxx_version, "nvcc": tools.nvcc_version},
    }
    tmp = spec.marker.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    tmp.replace(spec.marker)
    return library_path
