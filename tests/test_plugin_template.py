"""The shipped plugin template installs with pip and trains a recipe that uses it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).parents[1] / "examples" / "plugin-template"
VISIONFORGE = [str(Path(sys.executable).parent / "visionforge")]


@pytest.fixture(scope="module")
def installed_template() -> Iterator[None]:
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "install", "-q", "--no-deps", str(TEMPLATE)], check=True)
    try:
        yield
    finally:
        subprocess.run([*pip, "uninstall", "-q", "-y", "visionforge-example-plugin"], check=True)


@pytest.mark.slow
def test_plugin_is_listed_with_its_components(installed_template: None) -> None:
    out = subprocess.run(
        [*VISIONFORGE, "plugins"], capture_output=True, text=True, check=True
    ).stdout
    assert "example" in out
    assert "tiny_cnn" in out and "stripes" in out


@pytest.mark.slow
def test_recipe_using_the_plugin_trains(installed_template: None, tmp_path: Path) -> None:
    output = tmp_path / "run"
    result = subprocess.run(
        [*VISIONFORGE, "train", str(TEMPLATE / "recipe.yaml"), "--set", f"trainer.output={output}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output / "last.ckpt").exists()
    manifest = json.loads((output / "last.ckpt.manifest.json").read_text())
    assert manifest["kind"] == "checkpoint"
    rows = (output / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(","), strict=False))
    assert float(last["val/top1"]) > 0.8, last
