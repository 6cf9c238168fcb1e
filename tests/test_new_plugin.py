"""``visionforge new-plugin NAME`` writes a plugin package that installs and trains."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomllib
from packaging.requirements import Requirement

from visionforge import cli
from visionforge.registry import Registries, Registry

VISIONFORGE = str(Path(sys.executable).parent / "visionforge")


def fresh_registries() -> Registries:
    kinds = ["dataset", "model", "loss", "evaluator", "runner", "exporter", "converter"]
    return Registries(*(Registry[Any](kind) for kind in kinds))


def test_new_plugin_writes_a_package_that_registers_its_components(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["new-plugin", "seaweed", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "visionforge-seaweed"
    assert f"wrote {root}" in capsys.readouterr().out
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == "visionforge-seaweed"
    assert project["entry-points"]["visionforge"] == {"seaweed": "visionforge_seaweed.plugin"}
    core = Requirement(project["dependencies"][0])
    assert core.name == "visionforge"
    assert core.specifier.contains("0.1.0") and not core.specifier.contains("1.0.0")
    assert (root / "src" / "visionforge_seaweed" / "py.typed").exists()
    monkeypatch.syspath_prepend(str(root / "src"))
    plugin = importlib.import_module("visionforge_seaweed.plugin")
    registries = fresh_registries()
    plugin.visionforge_register(registries=registries)
    assert registries.models.names() == ["seaweed_cnn"]
    assert registries.datasets.names() == ["seaweed_stripes"]
    assert "torch" not in getattr(plugin, "__dict__", {})  # the entry module stays torch-free


def test_new_plugin_refuses_bad_names_and_existing_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["new-plugin", "My-Plugin", "--dir", str(tmp_path)]) == 2
    assert "use lowercase letters" in capsys.readouterr().err
    (tmp_path / "visionforge-taken").mkdir()
    assert cli.main(["new-plugin", "taken", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(1800)  # pip install + a short training run on a busy CPU
def test_new_plugin_installs_and_trains(tmp_path: Path) -> None:
    """Install the generated package (into its own target folder, not this venv) and train
    its recipe with the visionforge command."""
    subprocess.run([VISIONFORGE, "new-plugin", "kelp", "--dir", str(tmp_path)], check=True)
    root = tmp_path / "visionforge-kelp"
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(site), str(root)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    listing = subprocess.run(
        [VISIONFORGE, "plugins"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert "kelp" in listing and "kelp_cnn" in listing and "kelp_stripes" in listing
    output = tmp_path / "run"
    result = subprocess.run(
        [VISIONFORGE, "train", str(root / "recipe.yaml"), "--set", f"trainer.output={output}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["metrics"]["val/top1"] > 0.8, manifest["metrics"]
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
