"""Entry module: registers the components. Builders are lazy "module:function" strings,
so `visionforge plugins` and recipe validation never import torch."""

from __future__ import annotations

from visionforge import hookimpl
from visionforge.registry import Registries
from visionforge_example_plugin.configs import StripesConfig, TinyCNNConfig


@hookimpl
def visionforge_register(registries: Registries) -> None:
    registries.models.register(
        "tiny_cnn",
        config=TinyCNNConfig,
        builder="visionforge_example_plugin.components:build_tiny_cnn",
    )
    registries.datasets.register(
        "stripes",
        config=StripesConfig,
        builder="visionforge_example_plugin.components:build_stripes",
    )
