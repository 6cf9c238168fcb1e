"""The student: any timm backbone + projection to the teacher's embedding size + classifier."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import timm
import torch
from torch import nn

from visionforge.components.models import load_weights
from visionforge.errors import ConfigError
from visionforge_distill.configs import StudentConfig


class Student(nn.Module):
    """``model(batch) -> {"embedding": [B, D], "logits": [B, C]}``; exports the embedding."""

    def __init__(self, backbone: nn.Module, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        features = int(backbone.num_features)  # type: ignore[arg-type]
        self.projection = nn.Linear(features, embedding_dim)
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.num_classes = num_classes

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The embedding of a plain image tensor ``[B, 3, H, W]``."""
        return self.projection(self.backbone(images))

    def forward(self, batch: Mapping[str, Any] | torch.Tensor) -> dict[str, torch.Tensor]:
        images = batch if isinstance(batch, torch.Tensor) else batch["image"]
        if type(images) is not torch.Tensor:  # tv_tensors.Image
            images = images.as_subclass(torch.Tensor)
        embedding = self.embed(images)
        return {"embedding": embedding, "logits": self.classifier(embedding)}

    def export_module(self) -> nn.Module:
        """Image in, embedding out: what the reference index and the device use."""
        return EmbeddingNet(self)


class EmbeddingNet(nn.Module):
    """The student's embedding path as a tensor-in, tensor-out network."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.student.embed(images)


def build_student(cfg: StudentConfig) -> Student:
    """Registry builder of ``distill_student`` (random init unless ``pretrained_path``)."""
    if not timm.is_model(cfg.backbone):
        raise ConfigError(f"model.backbone: unknown timm model {cfg.backbone!r}")
    backbone = timm.create_model(
        cfg.backbone, pretrained=False, num_classes=0, drop_rate=cfg.drop_rate, **cfg.kwargs
    )
    if cfg.pretrained_path is not None:
        state = load_weights(cfg.pretrained_path)
        missing, unexpected = backbone.load_state_dict(state, strict=False)
        if missing:
            raise ConfigError(
                f"model.pretrained_path: {cfg.pretrained_path} misses {len(missing)} backbone "
                f"weights (e.g. {missing[0]}); pass weights of {cfg.backbone}"
            )
        del unexpected  # a classifier head of the pretrained model is not used
    return Student(backbone, cfg.embedding_dim, cfg.num_classes)
