"""Entry module of the resnet plugin: registers its components (torch-free)."""

from __future__ import annotations

from visionforge import hookimpl
from visionforge.registry import Registries


@hookimpl
def visionforge_register(registries: Registries) -> None:
    """Nothing registered yet."""
