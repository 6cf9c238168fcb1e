"""Entry module of the aws plugin: registers the SageMaker runner and the ``aws`` commands."""

from __future__ import annotations

import argparse

from visionforge import hookimpl
from visionforge.registry import Registries
from visionforge_aws.configs import SageMakerRunnerConfig


@hookimpl
def visionforge_register(registries: Registries) -> None:
    """Register the ``sagemaker`` runner."""
    registries.runners.register(
        "sagemaker",
        config=SageMakerRunnerConfig,
        builder="visionforge_aws.sagemaker:build_sagemaker",
        description="train on Amazon SageMaker (CreateTrainingJob), managed spot optional",
    )


@hookimpl
def visionforge_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``visionforge aws sync|sagemaker-entry``."""
    from visionforge_aws.cli import add_commands

    add_commands(subparsers)
