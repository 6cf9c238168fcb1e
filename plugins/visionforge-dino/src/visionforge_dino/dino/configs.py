"""Torch-free configs of the ``dino_r50_4scale`` / ``dino_r50_5scale`` models and the ``dino``
loss. Defaults are the paper's DINO-4scale ResNet-50 configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from visionforge.config import ComponentConfig
from visionforge_dino.detr.configs import DetectorConfig

Stage = Literal["layer1", "layer2", "layer3", "layer4"]


class DinoModelConfig(DetectorConfig):
    """DINO: ResNet + deformable encoder/decoder, contrastive denoising, mixed query
    selection and look-forward-twice box refinement (Zhang et al., 2022)."""

    backbone_stages: tuple[Stage, ...] = Field(
        ("layer2", "layer3", "layer4"),
        description="ResNet stages fed to the encoder; extra levels come from stride-2 convs",
    )
    num_feature_levels: int = Field(4, ge=1)
    enc_layers: int = Field(6, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    enc_n_points: int = Field(4, ge=1)
    dec_n_points: int = Field(4, ge=1)
    num_queries: int = Field(900, ge=1)
    position_temperature: float = Field(20.0, gt=0, description="sine encoding (DINO: 20)")
    group_norm_groups: int = Field(32, ge=1, description="GroupNorm groups of the projections")
    dn_number: int = Field(100, ge=0, description="denoising queries (0: no denoising)")
    dn_label_noise_ratio: float = Field(0.5, ge=0, le=1)
    dn_box_noise_scale: float = Field(1.0, ge=0)
    dn_labelbook_size: int | None = Field(
        None, description="rows of the DN label embedding - 1 (default: num_classes)"
    )
    num_select: int = Field(300, ge=1, description="detections kept per image by postprocess")
    msda_backend: Literal["cuda", "cpu", "pytorch"] | None = Field(
        None, description="deformable-attention backend (None: the fastest available)"
    )

    @model_validator(mode="after")
    def _check_sizes(self) -> DinoModelConfig:
        if self.hidden_dim % self.group_norm_groups:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not a multiple of group_norm_groups")
        if len(self.backbone_stages) > self.num_feature_levels:
            raise ValueError(
                f"backbone_stages has {len(self.backbone_stages)} stages, more than "
                f"num_feature_levels={self.num_feature_levels}"
            )
        return self


class DinoR50FourScaleConfig(DinoModelConfig):
    """DINO-4scale ResNet-50 (``checkpoint0011_4scale.pth``: 49.0 AP on COCO val2017, 12
    epochs)."""


class DinoR50FiveScaleConfig(DinoModelConfig):
    """DINO-5scale ResNet-50 (stages layer1..layer4 + one extra level; 49.4 AP at 12
    epochs)."""

    backbone_stages: tuple[Stage, ...] = ("layer1", "layer2", "layer3", "layer4")
    num_feature_levels: int = Field(5, ge=1)


class DinoLossConfig(ComponentConfig):
    """DINO's criterion: sigmoid focal classification + L1 + GIoU on the matched queries of
    the last layer, every auxiliary layer, the encoder proposals, and the denoising groups."""

    cost_class: float = Field(2.0, ge=0)
    cost_bbox: float = Field(5.0, ge=0)
    cost_giou: float = Field(2.0, ge=0)
    cls_weight: float = Field(1.0, ge=0)
    bbox_weight: float = Field(5.0, ge=0)
    giou_weight: float = Field(2.0, ge=0)
    encoder_weight: float = Field(1.0, ge=0, description="scales the encoder-proposal terms")
    focal_alpha: float = Field(0.25, ge=0, le=1)
    focal_gamma: float = Field(2.0, ge=0)
