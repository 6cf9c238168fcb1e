"""ResNet backbones with frozen batch norm that return masked feature maps (DETR, DINO).

The trunk comes from torchvision or timm by name; its state_dict keys are the same in both
zoos (``conv1``, ``bn1``, ``layer1..4``), which is what the official DETR/DINO checkpoints hold
under ``backbone.0.body.``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from visionforge.errors import CheckpointError, ConfigError

BackboneSource = Literal["torchvision", "timm"]
BackboneNorm = Literal["frozen", "batch"]
STAGES = ("layer1", "layer2", "layer3", "layer4")
_TIMM_STAGE_INDEX = {"layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4}
_TRAINABLE_STAGES = ("layer2", "layer3", "layer4")  # as the original: stem and layer1 frozen


def _frozen_batch_norm(
    num_features: int, device: Any = None, dtype: torch.dtype | None = None
) -> FrozenBatchNorm2d:
    """torchvision's FrozenBatchNorm2d with the factory arguments timm passes."""
    return FrozenBatchNorm2d(num_features).to(device=device, dtype=dtype)


_NORM_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "frozen": _frozen_batch_norm,
    "batch": nn.BatchNorm2d,
}


def _torchvision_trunk(
    name: str, stages: Sequence[str], dilation: bool, norm: BackboneNorm
) -> tuple[nn.Module, list[int]]:
    known = torchvision.models.list_models(module=torchvision.models)
    if not name.startswith("resnet") or name not in known:
        options = [n for n in known if n.startswith("resnet")]
        raise ConfigError(f"model.backbone: {name!r} is not a torchvision ResNet ({options})")
    net = torchvision.models.get_model(
        name,
        weights=None,
        norm_layer=_NORM_LAYERS[norm],
        replace_stride_with_dilation=[False, False, dilation],
    )
    last_blocks = [getattr(net, s)[-1] for s in stages]
    channels = [
        int((b.conv3 if isinstance(b, Bottleneck) else b.conv2).out_channels) for b in last_blocks
    ]
    return IntermediateLayerGetter(net, return_layers={s: s for s in stages}), channels


def _timm_trunk(
    name: str, stages: Sequence[str], dilation: bool, norm: BackboneNorm
) -> tuple[nn.Module, list[int]]:
    if not timm.is_model(name) or "resnet" not in name:
        raise ConfigError(
            f"model.backbone: {name!r} is not a timm ResNet (timm.list_models('*resnet*'))"
        )
    net = timm.create_model(
        name,
        pretrained=False,
        features_only=True,
        out_indices=tuple(_TIMM_STAGE_INDEX[s] for s in stages),
        norm_layer=_NORM_LAYERS[norm],
        output_stride=16 if dilation else 32,
    )
    feature_info: timm.models.FeatureInfo = net.feature_info  # type: ignore[assignment]
    return net, list(feature_info.channels())


class ResNetBackbone(nn.Module):
    """``forward(images, mask) -> [(features, mask), ...]``, one pair per requested stage.

    ``mask`` is ``Bool[B,H,W]`` (True = padding) and is resized to each feature map with
    nearest interpolation, as in the original. ``body`` holds the trunk; ``num_channels``
    lists each returned stage's channel count.

    ``norm="frozen"`` (the original, for ImageNet weights): frozen batch statistics, stem and
    layer1 not trained. ``norm="batch"`` (a trunk trained from random weights): BatchNorm
    updated in training and every stage trained; frozen statistics of random weights leave
    the trunk unnormalised.
    """

    def __init__(
        self,
        name: str = "resnet50",
        *,
        source: BackboneSource = "torchvision",
        stages: Sequence[str] = ("layer4",),
        dilation: bool = False,
        trainable: bool = True,
        norm: BackboneNorm = "frozen",
    ) -> None:
        super().__init__()
        unknown = [s for s in stages if s not in STAGES]
        if unknown or not stages:
            raise ConfigError(f"backbone stages {list(stages)}: choose from {STAGES}")
        self.stages = tuple(stages)
        make = _torchvision_trunk if source == "torchvision" else _timm_trunk
        self.body, self.num_channels = make(name, self.stages, dilation, norm)
        for param_name, param in self.body.named_parameters():
            in_trained_stage = norm == "batch" or param_name.startswith(_TRAINABLE_STAGES)
            param.requires_grad_(trainable and in_trained_stage)

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        out = self.body(images)
        return list(out.values()) if isinstance(out, dict) else list(out)

    def forward(
        self, images: torch.Tensor, mask: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        result = []
        for features in self._features(images):
            resized = F.interpolate(mask[None].to(features.dtype), size=features.shape[-2:])
            result.append((features, resized.to(torch.bool)[0]))
        return result


def load_backbone_weights(
    backbone: ResNetBackbone, state: dict[str, torch.Tensor], path: str
) -> None:
    """Load ImageNet weights (a torchvision/timm ResNet state_dict) into ``backbone.body``;
    the classifier (``fc.*``) and ``num_batches_tracked`` are ignored, anything else that
    does not fit raises naming the keys."""
    own = backbone.body.state_dict()
    kept = {k: v for k, v in state.items() if k in own}
    ignored = {k for k in state if k.startswith("fc.") or k.endswith("num_batches_tracked")}
    unexpected = sorted(set(state) - set(kept) - ignored)
    missing = sorted(k for k in set(own) - set(kept) if not k.endswith("num_batches_tracked"))
    wrong = sorted(k for k, v in kept.items() if tuple(v.shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"model.backbone_weights: {path} does not fit the backbone: {len(missing)} missing "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(wrong)} of another shape {wrong[:3]}; pass the ImageNet weights of the "
            "same ResNet"
        )
    backbone.body.load_state_dict(kept, strict=False)  # strict about everything but counters
