"""The training loop the tiny-detector learning tests share (no tests here): every image of
a small dataset in one batch, a fixed number of optimizer steps, then train-set metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import visionforge
from visionforge.engine.evaluation import with_predictions


@dataclass
class Overfit:
    """Loss of the first and the last step, and the COCO metrics after the last."""

    first_loss: float
    last_loss: float
    metrics: dict[str, float]


def overfit(
    model: nn.Module,
    loss: str,
    dataset: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    steps: int,
    clip_grad_norm: float = 0.1,
) -> Overfit:
    """Train ``model`` with the ``loss`` criterion for ``steps`` steps on one batch holding
    every image of ``dataset`` (a registry spec), then evaluate it on that batch
    (``coco_bbox``)."""
    data = visionforge.datasets.build(dataset)
    batch = data.collate_fn([data[i] for i in range(len(data))])
    criterion = visionforge.losses.build({"type": loss})
    model.train()
    first_loss: float | None = None
    for _ in range(steps):
        losses = criterion(model(batch), batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
        first_loss = float(losses["loss"].detach()) if first_loss is None else first_loss
    assert first_loss is not None, "steps must be at least 1"
    model.eval()
    evaluator = visionforge.evaluators.build({"type": "coco_bbox", "plots": False})
    with torch.no_grad():
        evaluator.update(with_predictions(model, model(batch), batch), batch)
    return Overfit(first_loss, float(losses["loss"].detach()), evaluator.compute())
