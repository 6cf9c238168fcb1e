"""Plugin discovery and loading through pluggy and the ``visionforge`` entry-point group.

Plugins are loaded lazily: the first time a registry is asked for a name it does not
hold, or for its full listing. ``VISIONFORGE_DISABLE_PLUGIN_AUTOLOAD=1`` loads none;
``VISIONFORGE_STRICT_PLUGINS=1`` turns a plugin that fails to load into an error.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from visionforge import hookspecs
from visionforge.errors import PluginLoadError
from visionforge.registry import CORE_NAMESPACE, REGISTRIES, Registries

if TYPE_CHECKING:
    from visionforge.interfaces import TrainerView

ENTRY_POINT_GROUP = "visionforge"


@dataclass
class PluginInfo:
    """What is known about one plugin: where it came from and whether it loaded."""

    name: str
    version: str
    module: str
    error: str | None = None
    loaded: bool = False
    components: dict[str, list[str]] = field(default_factory=dict)


class PluginLoader:
    """Owns the pluggy manager and loads entry points on demand."""

    def __init__(self, registries: Registries) -> None:
        self.registries = registries
        self.pm = pluggy.PluginManager("visionforge")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._core_loaded = False
        self._all_loaded = False
        self._lock = threading.RLock()
        for registry in registries.all().values():
            registry.set_loader(self.ensure_loaded)

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def ensure_core(self) -> None:
        """Register the core's own components (cheap, torch-free)."""
        with self._lock:
            if self._core_loaded:
                return
            self._core_loaded = True
            from visionforge.components import plugin as core_plugin

            self._register_module(CORE_NAMESPACE, core_plugin)

    def ensure_loaded(self, plugin_name: str | None = None) -> None:
        """Load one named plugin, or every installed plugin not loaded yet."""
        with self._lock:
            self.ensure_core()
            if self._all_loaded or _env_flag("VISIONFORGE_DISABLE_PLUGIN_AUTOLOAD"):
                return
            for ep in _entry_points():
                if plugin_name is not None and ep.name != plugin_name:
                    continue
                if ep.name not in self.infos:
                    self._load_entry_point(ep)
            if plugin_name is None:
                self._all_loaded = True

    def register_plugin(self, name: str, module: ModuleType | object) -> None:
        """Register an already-imported plugin object (tests, notebooks, frameworks)."""
        with self._lock:
            self.ensure_core()
            self._register_module(name, module)

    def _load_entry_point(self, ep: metadata.EntryPoint) -> None:
        dist = getattr(ep, "dist", None)
        info = PluginInfo(ep.name, dist.version if dist else "?", ep.value)
        self.infos[ep.name] = info
        try:
            module = ep.load()
            self._register_module(ep.name, module, info)
        except Exception as err:  # a broken plugin must not take the others down
            info.error = f"{type(err).__name__}: {err}"
            message = f"visionforge plugin {ep.name!r} ({ep.value}) failed to load: {info.error}"
            if _env_flag("VISIONFORGE_STRICT_PLUGINS"):
                raise PluginLoadError(message) from err
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    def _register_module(
        self, name: str, module: ModuleType | object, info: PluginInfo | None = None
    ) -> None:
        if info is None:
            version = getattr(module, "__version__", None) or _core_version()
            info = PluginInfo(name, version, getattr(module, "__name__", repr(module)))
            self.infos[name] = info
        before = {kind: reg.loaded_names() for kind, reg in self.registries.all().items()}
        self.registries.set_namespace(name)
        try:
            self.pm.register(module, name=name)
            others = [p for p in self.pm.get_plugins() if p is not module]
            register = self.pm.subset_hook_caller("visionforge_register", remove_plugins=others)
            register(registries=self.registries)
        finally:
            self.registries.set_namespace(CORE_NAMESPACE)
        for kind, registry in self.registries.all().items():
            added = sorted(registry.loaded_names() - before[kind])
            if added:
                info.components[kind] = added
        info.loaded = True


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _core_version() -> str:
    try:
        return metadata.version("visionforge")
    except metadata.PackageNotFoundError:
        return "0+unknown"


LOADER = PluginLoader(REGISTRIES)


def plugin_infos() -> list[PluginInfo]:
    """Every plugin (core first), after loading all of them."""
    LOADER.ensure_loaded()
    return list(LOADER.infos.values())


def hook() -> Any:
    """The pluggy hook relay (``hook().visionforge_epoch_end(...)``), plugins loaded."""
    LOADER.ensure_loaded()
    return LOADER.hook


class TrainerHooks:
    """The trainer hooks, called with their declared signatures (mypy checks each call)."""

    def __init__(self, relay: Any) -> None:
        self._relay = relay

    def train_start(self, trainer: TrainerView) -> None:
        self._relay.visionforge_train_start(trainer=trainer)

    def has_train_step_end(self) -> bool:
        """Whether any plugin implements the per-step hook (the trainer skips it otherwise)."""
        return bool(self._relay.visionforge_train_step_end.get_hookimpls())

    def train_step_end(self, trainer: TrainerView, step: int, losses: dict[str, float]) -> None:
        self._relay.visionforge_train_step_end(trainer=trainer, step=step, losses=losses)

    def epoch_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, float]) -> None:
        self._relay.visionforge_epoch_end(trainer=trainer, epoch=epoch, metrics=metrics)

    def checkpoint_saved(self, trainer: TrainerView, path: str) -> None:
        self._relay.visionforge_checkpoint_saved(trainer=trainer, path=path)

    def train_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        self._relay.visionforge_train_end(trainer=trainer, metrics=metrics)


def trainer_hooks() -> TrainerHooks:
    """The typed trainer hooks, plugins loaded."""
    return TrainerHooks(hook())


def register_plugin(name: str, module: ModuleType | object) -> None:
    """Register a plugin object by hand (e.g. a module in a notebook)."""
    LOADER.register_plugin(name, module)


__all__ = [
    "ENTRY_POINT_GROUP",
    "LOADER",
    "PluginInfo",
    "TrainerHooks",
    "hook",
    "plugin_infos",
    "register_plugin",
    "trainer_hooks",
]
