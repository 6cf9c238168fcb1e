"""visionforge: a plugin-based library of reusable vision-training components.

Importing this package is cheap: it imports neither torch nor any plugin. The registries
load plugins the first time they are asked for a name they do not hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from visionforge.config import ComponentConfig, Recipe, load_recipe
from visionforge.errors import ConfigError, VisionforgeError
from visionforge.hookspecs import hookimpl
from visionforge.plugins import LOADER  # wires the registries to the plugin loader
from visionforge.registry import REGISTRIES, Registries, Registry

__version__ = "0.1.0"

datasets = REGISTRIES.datasets
models = REGISTRIES.models
losses = REGISTRIES.losses
evaluators = REGISTRIES.evaluators
runners = REGISTRIES.runners
exporters = REGISTRIES.exporters
converters = REGISTRIES.converters

if TYPE_CHECKING:
    from visionforge.engine.trainer import Trainer

__all__ = [
    "LOADER",
    "REGISTRIES",
    "ComponentConfig",
    "ConfigError",
    "Recipe",
    "Registries",
    "Registry",
    "Trainer",
    "VisionforgeError",
    "converters",
    "datasets",
    "evaluators",
    "exporters",
    "hookimpl",
    "load_recipe",
    "losses",
    "models",
    "runners",
]


def __getattr__(name: str) -> Any:
    if name == "Trainer":
        from visionforge.engine.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'visionforge' has no attribute {name!r}")
