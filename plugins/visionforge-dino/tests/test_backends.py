"""Backend choice, fallbacks, the build cache and its key."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from visionforge_dino.ops import MSDAInputError, backends, build, multi_scale_deformable_attention


@pytest.fixture
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> backends._State:
    """Backend state as in a new process (loaded libraries stay loaded in torch)."""
    state = backends._State()
    monkeypatch.setattr(backends, "_STATE", state)
    return state


def _without_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    tools = dataclasses.replace(build.find_toolchain(), cxx=None, cxx_version=None)
    monkeypatch.setattr(build, "find_toolchain", lambda: tools)


def test_env_variable_selects_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backends.BACKEND_ENV, "pytorch")
    assert backends.select_backend("cpu") == "pytorch"
    monkeypatch.setenv(backends.BACKEND_ENV, " PyTorch ")
    assert backends.select_backend("cuda") == "pytorch"
    assert backends.select_backend("mps") == "pytorch"


def test_unknown_backend_names_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backends.BACKEND_ENV, "triton")
    with pytest.raises(MSDAInputError, match=r"\$VISIONFORGE_MSDA_BACKEND is 'triton': use one"):
        backends.select_backend("cpu")
    with pytest.raises(MSDAInputError, match="backend= is 'gpu'"):
        backends.select_backend("cpu", "gpu")


def test_backend_for_another_device_warns_once(
    fresh_state: backends._State, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(backends.BACKEND_ENV, "cuda")
    with pytest.warns(RuntimeWarning, match="'cuda' cannot run cpu tensors"):
        assert backends.select_backend("cpu") == "pytorch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.select_backend("cpu") == "pytorch"


@pytest.mark.usefixtures("cpu_kernel")
def test_auto_uses_the_cpu_kernel() -> None:
    assert backends.select_backend("cpu") == "cpu"
    assert backends.is_loaded("cpu")


def test_missing_compiler_falls_back_once_with_the_fix(
    fresh_state: backends._State, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))  # nothing built here
    _without_compiler(monkeypatch)
    value = torch.randn(1, 4, 1, 2)
    locations = torch.rand(1, 3, 1, 1, 2, 2)
    weights = torch.rand(1, 3, 1, 1, 2)
    with pytest.warns(RuntimeWarning, match=r"cpu kernel .* not available \(no C\+\+ compiler"):
        out = multi_scale_deformable_attention(value, [(2, 2)], None, locations, weights)
    expected = multi_scale_deformable_attention(
        value, [(2, 2)], None, locations, weights, backend="pytorch"
    )
    torch.testing.assert_close(out, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.select_backend("cpu") == "pytorch"
    assert "set CXX" in (backends.failure("cpu") or "")


@pytest.mark.usefixtures("cpu_kernel")
def test_cached_build_loads_without_a_compiler(
    fresh_state: backends._State, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_compiler(monkeypatch)
    assert backends.ensure_compiled("cpu")


def test_cache_folder_follows_the_env_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    assert build.cache_root() == tmp_path / "dino-ops"
    assert build.build_spec("cpu").directory.parent == tmp_path / "dino-ops"
    monkeypatch.delenv(build.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert build.cache_root() == tmp_path / "xdg" / "visionforge" / "dino-ops"


def test_cache_key_covers_torch_cuda_arch_and_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    tools = build.find_toolchain()
    cuda = build.build_spec("cuda", tools)
    assert {"torch", "torch_cuda", "arch_list", "sources"} <= cuda.key.keys()
    monkeypatch.setenv(build.ARCH_ENV, "7.5")
    other_arch = build.build_spec("cuda", tools)
    assert other_arch.directory != cuda.directory
    monkeypatch.undo()
    assert build.build_spec("cpu", tools).directory != cuda.directory
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert build.build_spec("cuda", tools).directory != cuda.directory
    monkeypatch.undo()
    monkeypatch.setattr(build, "sources_digest", lambda backend: "changed")
    assert build.build_spec("cuda", tools).directory != cuda.directory


@pytest.mark.parametrize(
    ("arch_list", "capability", "covered"),
    [
        ("8.0;8.6;8.9;9.0+PTX", (9, 0), True),
        ("8.0;8.6;8.9;9.0+PTX", (12, 0), True),  # through PTX
        ("8.0;8.6", (8, 9), True),  # sm_86 binaries run on sm_89
        ("8.6", (8, 0), False),
        ("9.0", (10, 0), False),
        ("7.5 8.0", (8, 0), True),
        ("9.0a", (9, 0), True),
        ("9.0a+PTX", (10, 0), False),  # arch-specific PTX runs on sm_90 only
        ("10.0f", (10, 3), True),  # family: the same major
        ("10.0f+PTX", (12, 0), False),
        ("native", (9, 0), False),
    ],
)
def test_arch_list_coverage(arch_list: str, capability: tuple[int, int], covered: bool) -> None:
    assert build.arch_list_covers(arch_list, capability) is covered


def test_cuda_toolkit_detection_checks_headers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "cuda"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "nvcc").touch()
    monkeypatch.setenv("CUDA_HOME", str(fake))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    found = build._find_cuda_home()
    assert found != str(fake)  # no include/cuda_runtime.h: not a usable toolkit
    (fake / "include").mkdir()
    (fake / "include" / "cuda_runtime.h").touch()
    assert build._find_cuda_home() == str(fake)


@pytest.mark.parametrize(
    ("change", "fix"),
    [
        ({"cxx": None}, "set CXX"),
        ({"ninja": None}, "pip install ninja"),
        ({"cuda_home": None, "nvcc_version": None}, "set CUDA_HOME"),
        ({"nvcc_version": "11.8"}, "point CUDA_HOME at it"),
    ],
)
def test_missing_requirements_say_what_to_do(change: dict[str, Any], fix: str) -> None:
    tools = dataclasses.replace(
        build.find_toolchain(),
        cxx="/usr/bin/c++",
        ninja="/usr/bin/ninja",
        cuda_home="/opt/cuda",
        nvcc_version=torch.version.cuda or "13.0",
    )
    broken = dataclasses.replace(tools, **change)
    reason = build.missing_requirement("cuda", broken)
    if torch.version.cuda is None and "cxx" not in change and "ninja" not in change:
        assert reason is not None and "CPU-only build" in reason
    else:
        assert reason is not None and fix in reason


def test_failed_build_reports_the_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    spec = dataclasses.replace(build.build_spec("cpu"), sources=(tmp_path / "missing.cpp",))
    broken = tmp_path / "missing.cpp"
    broken.write_text("this is not C++\n")
    with pytest.raises(build.OpsBuildError, match=r"missing.cpp:1:1: error: .*build-ops --verbose"):
        build.build(spec)
    assert build.built_library(spec) is None


def _fake_gpus(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], torch_archs: list[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: torch_archs)


@pytest.mark.parametrize(
    ("configured", "capability", "expected"),
    [
        (None, (9, 0), "9.0+PTX"),
        ("native", (8, 6), "8.6+PTX"),
        (None, (13, 0), "12.0+PTX"),  # newer than torch knows: its newest arch, with PTX
        ("8.0;9.0", (9, 0), "8.0;9.0"),
    ],
)
def test_cuda_arch_list_follows_torch(
    monkeypatch: pytest.MonkeyPatch,
    configured: str | None,
    capability: tuple[int, int],
    expected: str,
) -> None:
    _fake_gpus(monkeypatch, capability, ["sm_80", "sm_90", "sm_120", "compute_120"])
    if configured is None:
        monkeypatch.delenv(build.ARCH_ENV, raising=False)
    else:
        monkeypatch.setenv(build.ARCH_ENV, configured)
    arch_list, _ = build.cuda_arch_list()
    assert arch_list == expected
    assert build.arch_mismatch(build.build_spec("cuda")) is None
    assert build.arch_mismatch(build.build_spec("cpu")) is None


def test_arch_list_missing_the_gpu_falls_back_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, fresh_state: backends._State
) -> None:
    _fake_gpus(monkeypatch, (9, 0), ["sm_80", "sm_90"])
    monkeypatch.setenv(build.ARCH_ENV, "8.0;8.6")
    with pytest.warns(RuntimeWarning, match=r"sm_90\): add 9.0 to \$TORCH_CUDA_ARCH_LIST"):
        assert not backends.ensure_compiled("cuda")
    assert "does not cover the visible GPU" in str(backends.failure("cuda"))


def test_cpu_backend_never_initializes_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_cuda(*args: object) -> None:
        raise AssertionError("CUDA queried for the CPU kernel")

    for name in ("is_available", "device_count", "get_device_capability"):
        monkeypatch.setattr(torch.cuda, name, no_cuda)
    build.find_toolchain.cache_clear()
    try:
        assert build.build_spec("cpu").backend == "cpu"
    finally:
        build.find_toolchain.cache_clear()


def test_unknown_arch_is_a_build_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils import cpp_extension

    def unknown_arch(**kwargs: object) -> None:
        raise ValueError("Unknown CUDA arch (10.0f) or GPU not supported")

    monkeypatch.setattr(cpp_extension, "load", unknown_arch)
    spec = build.build_spec("cpu")
    with pytest.raises(build.OpsBuildError, match=r"Unknown CUDA arch \(10.0f\)"):
        build.build(spec)
