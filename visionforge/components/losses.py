"""Cross-entropy on hard labels (with label smoothing) or soft targets (mixup/cutmix)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visionforge.components.configs import CrossEntropyConfig
from visionforge.errors import ConfigError


class CrossEntropyLoss(nn.Module):
    """``loss(outputs, batch) -> {"loss": ...}`` from ``outputs["logits"]`` and ``batch["label"]``.

    ``label`` is int64 ``[B]`` (class indices; ``label_smoothing`` applies) or float ``[B, K]``
    probabilities from mixup/cutmix, used as given (timm's Mixup applies its own smoothing).
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        logits: torch.Tensor = outputs["logits"]
        target: torch.Tensor = batch["label"]
        if target.is_floating_point():
            if target.shape != logits.shape:
                raise ConfigError(
                    f"cross_entropy: soft targets of shape {tuple(target.shape)} do not match "
                    f"logits {tuple(logits.shape)}; mixup num_classes must equal the model's"
                )
            loss = F.cross_entropy(logits, target.to(logits.dtype))
        else:
            loss = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        return {"loss": loss}


def build_cross_entropy(cfg: CrossEntropyConfig) -> CrossEntropyLoss:
    """The ``cross_entropy`` loss."""
    return CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
