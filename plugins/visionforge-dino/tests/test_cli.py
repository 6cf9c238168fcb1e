"""``visionforge dino build-ops`` and ``visionforge dino doctor``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from visionforge.cli import main
from visionforge_dino import plugin
from visionforge_dino.ops import backends, build


def _patch_toolchain(monkeypatch: pytest.MonkeyPatch, **changes: object) -> None:
    tools = dataclasses.replace(build.find_toolchain(), **changes)  # type: ignore[arg-type]
    monkeypatch.setattr(build, "find_toolchain", lambda: tools)


def test_hook_adds_the_dino_commands() -> None:
    parser = argparse.ArgumentParser()
    plugin.visionforge_cli(subparsers=parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dino", "build-ops", "--backend", "cuda", "--force"])
    assert (args.backend, args.force, args.verbose) == ("cuda", True, False)
    assert parser.parse_args(["dino", "doctor", "--no-check"]).no_check
    with pytest.raises(SystemExit):
        parser.parse_args(["dino", "build-ops", "--backend", "rocm"])


@pytest.mark.usefixtures("cpu_kernel")
def test_doctor_reports_versions_backends_and_checks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dino", "doctor"]) == 0
    out = capsys.readouterr().out
    for expected in ("torch", "C++ compiler", "CUDA arch list", "cache", "backends:", "active:"):
        assert expected in out
    assert "cpu      built:" in out
    assert "self-check: ok" in out
    assert "CPU tensors   cpu" in out
    assert "pytorch  always" in out


def test_doctor_gives_the_fix_for_missing_tools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv(backends.BACKEND_ENV, "cpu")
    _patch_toolchain(monkeypatch, cxx=None, cxx_version=None, cuda_home=None, nvcc_version=None)
    assert main(["dino", "doctor", "--no-check"]) == 0
    out = capsys.readouterr().out
    assert "cpu      unavailable" in out
    assert "fix: no C++ compiler found" in out
    assert "C++ compiler    not found" in out
    assert "requested     cpu ($VISIONFORGE_MSDA_BACKEND=cpu)" in out
    assert "CPU tensors   pytorch (fallback)" in out


@pytest.mark.usefixtures("cpu_kernel")
def test_build_ops_reuses_the_cache(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dino", "build-ops", "--backend", "cpu"]) == 0
    assert "cpu: already built:" in capsys.readouterr().out


def test_build_ops_explains_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    _patch_toolchain(monkeypatch, cxx=None, cxx_version=None)
    assert main(["dino", "build-ops", "--backend", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "error: cannot build the cpu kernel: no C++ compiler found" in err
    assert "set CXX" in err


@pytest.mark.usefixtures("cpu_kernel")
def test_build_ops_all_skips_cuda_without_a_toolkit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _patch_toolchain(monkeypatch, cuda_home=None, nvcc_version=None)
    assert main(["dino", "build-ops"]) == 0
    out = capsys.readouterr().out
    assert "cpu: already built" in out
    assert "cuda: skipped:" in out
