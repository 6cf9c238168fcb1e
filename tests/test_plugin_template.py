"""The shipped plugin template installs with pip (into a throwaway venv) and trains a recipe
that uses it."""

from __future__ import annotations

import importlib.util
import json
import site
import subprocess
import sys
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).parents[1] / "examples" / "plugin-template"
CLI = "import sys; from visionforge.cli import main; sys.exit(main())"


@pytest.fixture(scope="module")
def template_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway venv that sees this suite's packages (through a .pth file) and has the
    template installed into its own site-packages; the suite's interpreter stays untouched."""
    env = tmp_path_factory.mktemp("template-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    suite = [p for p in site.getsitepackages() if Path(p).is_dir()]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in suite)
    (Path(own) / "visionforge_suite.pth").write_text(lines)  # editable installs work too
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*install, str(TEMPLATE)], check=True)
    assert importlib.util.find_spec("visionforge_example_plugin") is None  # not in the suite
    return python


@pytest.mark.slow
def test_plugin_is_listed_with_its_components(template_python: Path) -> None:
    out = subprocess.run(
        [str(template_python), "-c", CLI, "plugins"], capture_output=True, text=True, check=True
    ).stdout
    assert "example" in out
    assert "tiny_cnn" in out and "stripes" in out


@pytest.mark.slow
def test_recipe_using_the_plugin_trains(template_python: Path, tmp_path: Path) -> None:
    output = tmp_path / "run"
    recipe = str(TEMPLATE / "recipe.yaml")
    result = subprocess.run(
        [str(template_python), "-c", CLI, "train", recipe, "--set", f"trainer.output={output}"],
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
