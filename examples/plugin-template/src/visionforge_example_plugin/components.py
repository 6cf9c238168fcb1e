"""The heavy part (torch), imported only when a recipe builds these components."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchvision import tv_tensors

from visionforge_example_plugin.configs import StripesConfig, TinyCNNConfig


class TinyCNN(nn.Module):
    """Called with a batch, returns ``{"logits": ...}`` like every visionforge model."""

    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(width * 16, num_classes),
        )

    def forward(self, batch: Mapping[str, Any] | torch.Tensor) -> dict[str, torch.Tensor]:
        images = batch["image"] if isinstance(batch, Mapping) else batch
        return {"logits": self.net(images)}

    def export_module(self) -> nn.Module:
        return self.net


def build_tiny_cnn(cfg: TinyCNNConfig) -> TinyCNN:
    return TinyCNN(cfg.num_classes, cfg.width)


class Stripes(torch.utils.data.Dataset[dict[str, Any]]):
    """Deterministic stripe images; the label is the stripe direction."""

    num_classes = 2
    class_names = ["horizontal", "vertical"]

    def __init__(self, cfg: StripesConfig) -> None:
        self.cfg = cfg

    def __len__(self) -> int:
        return self.cfg.num_samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        size = self.cfg.image_size
        gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + index)
        label = index % 2
        phase = int(torch.randint(0, 4, (), generator=gen))
        stripes = ((torch.arange(size) + phase) // 2 % 2).float()
        image = stripes[:, None].expand(size, size) if label == 0 else stripes.expand(size, size)
        image = image + 0.3 * torch.randn(size, size, generator=gen)
        return {"image": tv_tensors.Image(image[None]), "label": label}


def build_stripes(cfg: StripesConfig) -> Stripes:
    return Stripes(cfg)
