"""Entry module of the dino plugin: registers its components and CLI group (torch-free)."""

from __future__ import annotations

import argparse

from visionforge import hookimpl
from visionforge.registry import Registries


@hookimpl
def visionforge_register(registries: Registries) -> None:
    """Nothing registered yet (the DETR/DINO models come with a later issue)."""


@hookimpl
def visionforge_cli(subparsers: argparse._SubParsersAction) -> None:
    """``visionforge dino build-ops|doctor``."""
    from visionforge_dino.cli import add_dino_commands

    add_dino_commands(subparsers)
