"""Errors a new user makes: misspelled keys, --set values, plugins not installed, typo'd
data paths, broken builders, --debug placement and strict plugin mode. Each is one line."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from visionforge import cli, known_plugins
from visionforge.config import recipe_from_dict
from visionforge.errors import ConfigError, PluginLoadError, UnknownComponentError
from visionforge.plugins import plugin_infos
from visionforge.registry import Registry

QUICKSTART = Path(__file__).parents[1] / "examples" / "quickstart" / "recipe.yaml"


def quickstart() -> dict[str, Any]:
    return dict(yaml.safe_load(QUICKSTART.read_text()))


def error_of(overrides: list[str], data: dict[str, Any] | None = None) -> str:
    with pytest.raises((ConfigError, UnknownComponentError)) as err:
        recipe_from_dict(data or quickstart(), overrides, source="recipe.yaml")
    message = str(err.value)
    assert "\n" not in message
    return message


EXTRA = "Extra inputs are not permitted"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.epoch=3", f"trainer.epoch: {EXTRA} (got 3); did you mean 'epochs'?"),
        (
            "optimizer.momentm=0.9",
            f"optimizer.momentm: {EXTRA} (got 0.9); did you mean 'momentum'?",
        ),
        ("model.num_clases=3", f"model.num_clases: {EXTRA} (got 3); did you mean 'num_classes'?"),
        ("trainer.ema.decy=0.9", f"trainer.ema.decy: {EXTRA} (got 0.9); did you mean 'decay'?"),
    ],
)
def test_misspelled_key_from_set_says_did_you_mean_and_blames_set(
    override: str, expected: str
) -> None:
    assert error_of([override]) == f"--set {override}: {expected}"


def test_misspelled_key_in_the_file_blames_the_file() -> None:
    data = quickstart()
    data["trainer"]["epoch"] = 3
    message = error_of(["trainer.seed=1"], data)
    assert message.startswith("recipe.yaml: trainer.epoch: Extra inputs")
    assert message.endswith("did you mean 'epochs'?")


def test_bad_set_value_shows_what_the_user_wrote() -> None:
    message = error_of(["trainer.epochs=abc"])
    assert message.startswith("--set trainer.epochs=abc: trainer.epochs: Input should be")
    assert "(got 'abc')" in message


def test_unknown_component_from_set_blames_set() -> None:
    message = error_of(["model.type=timmm"])
    assert message.startswith("--set model.type=timmm: model.type: unknown model 'timmm'")


def test_component_of_a_plugin_not_installed_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(known_plugins.metadata, "version", not_installed)
    monkeypatch.setitem(known_plugins.KNOWN_COMPONENTS, "lichen", ("lichen_runner",))
    message = error_of(["runner.type=lichen_runner"])
    assert message.startswith(
        "--set runner.type=lichen_runner: runner.type: runner 'lichen_runner' is in "
        "visionforge-lichen, which is not installed: "
        'pip install --find-links dist "visionforge[lichen]==0.1.0"'
    )
    assert "pip install -e plugins/visionforge-lichen" in message


def test_known_plugin_table_matches_what_installed_plugins_register() -> None:
    """The table stays complete: every name an installed first-party plugin registers is in
    it (so a new component of a known plugin gets its install hint too)."""
    checked = 0
    for info in plugin_infos():
        if info.name not in known_plugins.KNOWN_COMPONENTS or info.error:
            continue
        registered = {n.partition(":")[2] for names in info.components.values() for n in names}
        assert registered <= set(known_plugins.KNOWN_COMPONENTS[info.name]), info.name
        checked += 1
    assert checked >= 1  # coco and resnet are installed with the dev setup


def test_unimportable_builder_names_component_and_plugin() -> None:
    class Cfg(BaseModel):
        pass

    registry: Registry[Any] = Registry("model")
    registry.register(
        "ghost", config=Cfg, builder="no_such_module_xyz.models:build", namespace="spooky"
    )
    with pytest.raises(PluginLoadError) as err:
        registry.build({"type": "ghost"}, "model")
    message = str(err.value)
    assert message.startswith("model 'ghost' of plugin 'spooky': cannot import its builder")
    assert "no_such_module_xyz.models:build" in message and "No module named" in message


def test_validate_checks_local_data_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "images" / "cat").mkdir(parents=True)
    recipe = tmp_path / "recipe.yaml"
    data = quickstart()
    data["data"]["train"] = {"type": "image_folder", "root": str(tmp_path / "images")}
    data["data"]["val"] = {"type": "image_folder", "root": str(tmp_path / "imgaes")}
    recipe.write_text(yaml.safe_dump(data))
    assert cli.main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"error: {recipe}: data.val.root: {tmp_path / 'imgaes'} does not exist")
    typo = str(tmp_path / "imags")
    assert cli.main(["validate", str(recipe), "--set", f"data.train.root={typo}"]) == 2
    err = capsys.readouterr().err
    assert f"--set data.train.root={typo}: data.train.root: {typo} does not exist" in err
    good = str(tmp_path / "images")
    assert cli.main(["validate", str(recipe), "--set", f"data.val.root={good}"]) == 0


def test_debug_works_after_the_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert cli.main(["validate", missing, "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("nope.yaml: file not found")
    assert cli.main(["validate", missing]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_strict_plugin_mode_prints_one_line(tmp_path: Path) -> None:
    dist = tmp_path / "vf_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vf-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[visionforge]\nbroken = vf_broken_plugin\n")
    (tmp_path / "vf_broken_plugin.py").write_text("import no_such_dependency_xyz\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "VISIONFORGE_STRICT_PLUGINS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "visionforge.cli", "plugins"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: visionforge plugin 'broken' (vf_broken_plugin) failed")
    assert "no_such_dependency_xyz" in lines[0]
