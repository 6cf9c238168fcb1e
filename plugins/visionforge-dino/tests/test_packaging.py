"""The wheel ships the kernel sources, so installed copies can build the ops."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from visionforge_dino.ops import build

PLUGIN_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_every_kernel_source(tmp_path: Path) -> None:
    source = tmp_path / "src-copy"
    shutil.copytree(
        PLUGIN_ROOT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(source),
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("visionforge_dino-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"visionforge_dino/ops/csrc/{p.name}" for p in build.SOURCE_DIR.iterdir()}
    assert expected and expected <= names
    for backend in build.COMPILED_BACKENDS:
        for path in build.build_spec(backend).sources:
            assert f"visionforge_dino/ops/csrc/{path.name}" in names
