"""Builder of the ``resnet`` model: the core timm classifier with ResNet presets."""

from __future__ import annotations

from torch import nn

from visionforge.components.configs import TimmModelConfig
from visionforge.components.models import build_timm
from visionforge_resnet.configs import ResNetConfig


def build_resnet(cfg: ResNetConfig) -> nn.Module:
    """timm ``resnet{depth}`` wrapped by the core to take batches and return ``logits``."""
    timm_cfg = TimmModelConfig(
        name=f"resnet{cfg.depth}",
        num_classes=cfg.num_classes,
        pretrained_path=cfg.pretrained_path,
        drop_path_rate=cfg.drop_path_rate,
        kwargs={"zero_init_last": cfg.zero_init_last},
    )
    return build_timm(timm_cfg)
