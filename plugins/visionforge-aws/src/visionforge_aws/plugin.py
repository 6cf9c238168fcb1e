"""Entry module of the aws plugin: registers the SageMaker and EC2 runners and the ``aws``
commands."""

from __future__ import annotations

import argparse

from visionforge import hookimpl
from visionforge.registry import Registries
from visionforge_aws.configs import Ec2RunnerConfig, SageMakerRunnerConfig


@hookimpl
def visionforge_register(registries: Registries) -> None:
    """Register the ``sagemaker`` and ``ec2`` runners."""
    registries.runners.register(
        "sagemaker",
        config=SageMakerRunnerConfig,
        builder="visionforge_aws.sagemaker:build_sagemaker",
        description="train on Amazon SageMaker (CreateTrainingJob), managed spot optional",
    )
    registries.runners.register(
        "ec2",
        config=Ec2RunnerConfig,
        builder="visionforge_aws.ec2:build_ec2",
        description="train on one EC2 instance run by the agent; spot survives interruptions",
    )


@hookimpl
def visionforge_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``visionforge aws sync|sagemaker-entry``."""
    from visionforge_aws.cli import add_commands

    add_commands(subparsers)
