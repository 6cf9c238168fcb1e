"""Plugin loading: entry points, lazy loading, broken plugins, env switches."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from visionforge import plugins
from visionforge.errors import PluginLoadError
from visionforge.registry import Registries, Registry

GOOD_PLUGIN = """
from pydantic import BaseModel
from visionforge import hookimpl

class Cfg(BaseModel):
    size: int = 1

@hookimpl
def visionforge_register(registries):
    registries.models.register("toy", config=Cfg, builder="json:dumps")
    registries.datasets.register("toy_data", config=Cfg, builder="json:loads")
"""


def fresh_registries() -> Registries:
    kinds = ["dataset", "model", "loss", "evaluator", "runner", "exporter", "converter"]
    return Registries(*(Registry[Any](kind) for kind in kinds))


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, **eps: str) -> None:
    points = [metadata.EntryPoint(n, v, plugins.ENTRY_POINT_GROUP) for n, v in eps.items()]
    monkeypatch.setattr(plugins, "_entry_points", lambda: points)


def test_plugin_components_are_namespaced_and_lazy(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (plugin_dir / "vf_toy_plugin.py").write_text(GOOD_PLUGIN)
    fake_entry_points(monkeypatch, toy="vf_toy_plugin")
    loader = plugins.PluginLoader(fresh_registries())
    assert "toy" not in loader.infos
    entry = loader.registries.models.get("toy")
    assert entry.qualified_name == "toy:toy"
    assert loader.infos["toy"].components == {"datasets": ["toy:toy_data"], "models": ["toy:toy"]}
    assert loader.registries.models.get("core:timm").namespace == "core"


def test_broken_plugin_is_reported_and_others_work(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (plugin_dir / "vf_toy_plugin.py").write_text(GOOD_PLUGIN)
    (plugin_dir / "vf_broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    fake_entry_points(monkeypatch, broken="vf_broken_plugin", toy="vf_toy_plugin")
    loader = plugins.PluginLoader(fresh_registries())
    with pytest.warns(RuntimeWarning, match=r"plugin 'broken' .* RuntimeError: boom at import"):
        names = loader.registries.models.names()
    assert "toy" in names
    assert loader.infos["broken"].error == "RuntimeError: boom at import"
    assert not loader.infos["broken"].loaded


def test_strict_mode_raises(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (plugin_dir / "vf_broken_plugin.py").write_text("import not_a_module_anywhere\n")
    fake_entry_points(monkeypatch, broken="vf_broken_plugin")
    monkeypatch.setenv("VISIONFORGE_STRICT_PLUGINS", "1")
    loader = plugins.PluginLoader(fresh_registries())
    with pytest.raises(PluginLoadError, match="'broken'.*not_a_module_anywhere"):
        loader.registries.models.names()


def test_autoload_can_be_disabled(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (plugin_dir / "vf_toy_plugin.py").write_text(GOOD_PLUGIN)
    fake_entry_points(monkeypatch, toy="vf_toy_plugin")
    monkeypatch.setenv("VISIONFORGE_DISABLE_PLUGIN_AUTOLOAD", "1")
    loader = plugins.PluginLoader(fresh_registries())
    assert "toy" not in loader.registries.models.names()
    assert "timm" in loader.registries.models.names()


def test_register_plugin_object_by_hand() -> None:
    loader = plugins.PluginLoader(fresh_registries())

    from visionforge.components.configs import CrossEntropyConfig

    class Manual:
        @plugins.hookspecs.hookimpl
        def visionforge_register(self, registries: Registries) -> None:
            registries.losses.register("manual", config=CrossEntropyConfig, builder=dict)

    loader.register_plugin("mine", Manual())
    assert loader.registries.losses.get("manual").qualified_name == "mine:manual"
    assert loader.infos["mine"].components == {"losses": ["mine:manual"]}


def test_import_list_and_validate_never_import_torch(tmp_path: Path) -> None:
    """Installed plugins included: their entry modules must stay torch-free. (How long the
    import takes is measured by benchmarks/import_time.py, not here.)"""
    recipe = Path(__file__).parents[1] / "examples" / "quickstart" / "recipe.yaml"
    script = textwrap.dedent(
        f"""
        import sys
        import visionforge
        assert "torch" not in sys.modules, "import visionforge imported torch"
        from visionforge.plugins import plugin_infos
        infos = plugin_infos()
        assert "coco" in {{i.name for i in infos}}, "the installed plugins were not loaded"
        broken = [i.name for i in infos if i.error]
        assert not broken, broken
        for registry in visionforge.REGISTRIES.all().values():
            registry.names()
        visionforge.load_recipe({str(recipe)!r})
        heavy = {{"torch", "torchvision", "timm"}}
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
        assert not heavy, heavy[:5]
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert out.returncode == 0, out.stderr
