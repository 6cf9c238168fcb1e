"""Entry module of the aws plugin: registers the ``aws`` commands (torch-free)."""

from __future__ import annotations

import argparse

from visionforge import hookimpl


@hookimpl
def visionforge_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``visionforge aws sync``."""
    from visionforge_aws.cli import add_commands

    add_commands(subparsers)
