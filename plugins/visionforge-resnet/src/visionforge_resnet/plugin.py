"""Entry module of the resnet plugin: registers its components and CLI (torch-free)."""

from __future__ import annotations

import argparse

from visionforge import hookimpl
from visionforge.registry import Registries
from visionforge_resnet.configs import ImageNetFolderConfig, ResNetConfig


@hookimpl
def visionforge_register(registries: Registries) -> None:
    """Register the ``resnet`` model (ResNet-18/34/50/101/152 by ``depth``) and the
    ``imagenet_folder`` dataset."""
    registries.models.register(
        "resnet",
        config=ResNetConfig,
        builder="visionforge_resnet.models:build_resnet",
        description="timm ResNet by depth (18/34/50/101/152), from scratch",
    )
    registries.datasets.register(
        "imagenet_folder",
        config=ImageNetFolderConfig,
        builder="visionforge_resnet.datasets:build_imagenet_folder",
        description="class-per-folder JPEGs decoded at reduced DCT scale (ImageNet input)",
    )


@hookimpl
def visionforge_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``visionforge resnet prepare|make-tiny|recipe|presets|curve|loader-bench``."""
    from visionforge_resnet.cli import add_commands

    add_commands(subparsers)
