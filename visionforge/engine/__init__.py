"""The training engine: :class:`Trainer`, evaluation and checkpoint loading."""

from __future__ import annotations

from visionforge.engine.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, load_model
from visionforge.engine.evaluation import evaluate
from visionforge.engine.trainer import Trainer, TrainResult

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainResult",
    "Trainer",
    "evaluate",
    "load_checkpoint",
    "load_model",
]
