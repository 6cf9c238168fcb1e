"""Entry module of the dino plugin: registers its components and CLI group (torch-free)."""

from __future__ import annotations

import argparse

from visionforge import hookimpl
from visionforge.registry import Registries
from visionforge_dino.detr import configs as detr_configs

_DETR = "visionforge_dino.detr"


@hookimpl
def visionforge_register(registries: Registries) -> None:
    """Models detr_r50 / detr_r101 and the detr loss."""
    registries.models.register(
        "detr_r50",
        config=detr_configs.DetrR50Config,
        builder=f"{_DETR}.builders:build_detr",
        description="DETR, ResNet-50 (loads the official detr-r50 weights)",
    )
    registries.models.register(
        "detr_r101",
        config=detr_configs.DetrR101Config,
        builder=f"{_DETR}.builders:build_detr",
        description="DETR, ResNet-101 (loads the official detr-r101 weights)",
    )
    registries.losses.register(
        "detr",
        config=detr_configs.DetrLossConfig,
        builder=f"{_DETR}.criterion:build_detr_loss",
        description="DETR set criterion: Hungarian matching, CE + L1 + GIoU, aux losses",
    )


@hookimpl
def visionforge_cli(subparsers: argparse._SubParsersAction) -> None:
    """``visionforge dino build-ops|doctor``."""
    from visionforge_dino.cli import add_dino_commands

    add_dino_commands(subparsers)
