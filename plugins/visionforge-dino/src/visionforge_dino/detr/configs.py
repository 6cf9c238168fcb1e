"""Torch-free configs of the ``detr_r50`` / ``detr_r101`` models and the ``detr`` loss."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from visionforge.config import ComponentConfig


class DetectorConfig(ComponentConfig):
    """What DETR and DINO share: class count and label space, weights, ResNet backbone and
    transformer sizes. The model configs set their own defaults and add their own fields."""

    num_classes: int = Field(
        91, ge=1, description="object classes, no-object not counted (COCO: 91 id slots)"
    )
    weights: str | None = Field(
        None,
        description="weights to load (the official release .pth, a visionforge checkpoint or "
        "a state_dict; local path or URL)",
    )
    backbone: str = Field("resnet50", description="ResNet name in the backbone_source zoo")
    backbone_source: Literal["torchvision", "timm"] = "torchvision"
    backbone_weights: str | None = Field(
        None, description="ImageNet weights of the backbone (local torchvision/timm file or URL)"
    )
    train_backbone: bool = Field(True, description="False: freeze the whole backbone")
    backbone_norm: Literal["frozen", "batch"] = Field(
        "frozen",
        description="frozen: frozen batch statistics, stem and layer1 frozen (the original, "
        "for ImageNet weights); batch: BatchNorm trained with every stage (a backbone from "
        "random weights)",
    )
    hidden_dim: int = Field(256, ge=2)
    nheads: int = Field(8, ge=1)
    dec_layers: int = Field(6, ge=1)
    dim_feedforward: int = Field(2048, ge=1)
    category_ids: list[int] | None = Field(
        None,
        description="category id of each class index, when they differ from the dataset's "
        "labels (None: the dataset's; with num_classes 91, COCO's ids 0..90 and names)",
    )
    class_names: list[str] | None = Field(None, description="name of each class index")

    @model_validator(mode="after")
    def _check_shared_sizes(self) -> DetectorConfig:
        if self.hidden_dim % self.nheads:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not a multiple of nheads")
        if self.hidden_dim % 2:
            raise ValueError("hidden_dim must be even (half x, half y sine features)")
        for name in ("category_ids", "class_names"):
            value = getattr(self, name)
            if value is not None and len(value) != self.num_classes:
                raise ValueError(
                    f"{name} has {len(value)} entries, num_classes is {self.num_classes}"
                )
        return self


class DetrModelConfig(DetectorConfig):
    """DETR: ResNet backbone (frozen BN) + sine positions + transformer encoder/decoder.

    Defaults are the paper's (256 wide, 8 heads, 6+6 layers, 2048 FFN, 100 queries)."""

    dilation: bool = Field(False, description="dilate the last stage (DETR-DC5)")
    enc_layers: int = Field(6, ge=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    pre_norm: bool = Field(False, description="LayerNorm before attention/FFN")
    num_queries: int = Field(100, ge=1)
    aux_loss: bool = Field(True, description="also return every decoder layer's predictions")
    position_temperature: float = Field(10000.0, gt=0)


class DetrR50Config(DetrModelConfig):
    """DETR with ResNet-50 (``detr-r50-e632da11.pth``: 42.0 AP on COCO val2017)."""


class DetrR101Config(DetrModelConfig):
    """DETR with ResNet-101 (``detr-r101-2c7b67e5.pth``: 43.5 AP on COCO val2017)."""

    backbone: str = "resnet101"


class DetrLossConfig(ComponentConfig):
    """DETR's set criterion: Hungarian matching, then CE (no-object weighted) + L1 + GIoU
    on the last decoder layer and on every auxiliary output."""

    cost_class: float = Field(1.0, ge=0)
    cost_bbox: float = Field(5.0, ge=0)
    cost_giou: float = Field(2.0, ge=0)
    ce_weight: float = Field(1.0, ge=0)
    bbox_weight: float = Field(5.0, ge=0)
    giou_weight: float = Field(2.0, ge=0)
    eos_coef: float = Field(0.1, ge=0, description="CE weight of the no-object class")

    @model_validator(mode="after")
    def _check_costs(self) -> DetrLossConfig:
        if self.cost_class == self.cost_bbox == self.cost_giou == 0:
            raise ValueError("cost_class, cost_bbox and cost_giou cannot all be 0")
        return self
