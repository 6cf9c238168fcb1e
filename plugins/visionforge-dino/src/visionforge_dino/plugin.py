"""Entry module of the dino plugin: registers its components and CLI group (torch-free)."""

from __future__ import annotations

import argparse

from visionforge import hookimpl
from visionforge.registry import Registries
from visionforge_dino.detr import configs as detr_configs
from visionforge_dino.dino import configs as dino_configs

_DETR = "visionforge_dino.detr"
_DINO = "visionforge_dino.dino"


@hookimpl
def visionforge_register(registries: Registries) -> None:
    """Models detr_r50 / detr_r101 / dino_r50_4scale / dino_r50_5scale, the detr and dino
    losses."""
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
    registries.models.register(
        "dino_r50_4scale",
        config=dino_configs.DinoR50FourScaleConfig,
        builder=f"{_DINO}.builders:build_dino",
        description="DINO-4scale, ResNet-50 (loads the official checkpoint0011_4scale weights)",
    )
    registries.models.register(
        "dino_r50_5scale",
        config=dino_configs.DinoR50FiveScaleConfig,
        builder=f"{_DINO}.builders:build_dino",
        description="DINO-5scale, ResNet-50 (loads the official 5-scale weights)",
    )
    registries.losses.register(
        "dino",
        config=dino_configs.DinoLossConfig,
        builder=f"{_DINO}.criterion:build_dino_loss",
        description="DINO criterion: focal + L1 + GIoU on decoder, encoder and denoising outputs",
    )


@hookimpl
def visionforge_cli(subparsers: argparse._SubParsersAction) -> None:
    """``visionforge dino build-ops|doctor``."""
    from visionforge_dino.cli import add_dino_commands

    add_dino_commands(subparsers)
