"""Hook specifications that plugins implement with ``@visionforge.hookimpl``.

Trainer hooks receive the trainer as a :class:`~visionforge.interfaces.TrainerView`: what
a hook may read (recipe, output, epoch, global step, metrics, model, device, position).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from visionforge.interfaces import TrainerView
    from visionforge.registry import Registries

hookspec = pluggy.HookspecMarker("visionforge")
hookimpl = pluggy.HookimplMarker("visionforge")


@hookspec
def visionforge_register(registries: Registries) -> None:
    """Register components. Keep this torch-free: pass builders as lazy
    ``"package.module:function"`` references."""


@hookspec
def visionforge_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``visionforge`` command. Set ``func`` with
    ``parser.set_defaults(func=...)``; it receives the parsed namespace and returns an
    exit code."""


@hookspec
def visionforge_train_start(trainer: TrainerView) -> None:
    """Called once before the first training step (after a resume, too)."""


@hookspec
def visionforge_train_step_end(trainer: TrainerView, step: int, losses: dict[str, float]) -> None:
    """Called after each optimizer step with the step's scalar losses."""


@hookspec
def visionforge_epoch_end(trainer: TrainerView, epoch: int, metrics: dict[str, float]) -> None:
    """Called after each epoch (and its evaluation) with the epoch's metrics; ``epoch`` is
    the epoch that ended, counted from 1 as in the logs."""


@hookspec
def visionforge_checkpoint_saved(trainer: TrainerView, path: str) -> None:
    """Called after a checkpoint was written (e.g. to sync it elsewhere)."""


@hookspec
def visionforge_train_end(trainer: TrainerView, metrics: dict[str, float]) -> None:
    """Called once when training finishes or stops on a signal."""
