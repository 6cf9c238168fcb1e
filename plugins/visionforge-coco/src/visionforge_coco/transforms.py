"""Detection transform presets (torchvision transforms v2, boxes follow the image).

``multiscale`` is the DETR recipe (Carion et al. 2020): horizontal flip, then with
probability 0.5 a resize of the shorter side to one of ``scales`` (longer side at most
``max_side``), else a resize to one of ``crop_scales``, a random crop of ``crop_size`` pixels
per side and the same multi-scale resize; evaluation resizes the shorter side to
``eval_size``. All geometry is torchvision's (``RandomShortestSize``, ``functional.crop``).
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from visionforge_coco.configs import DetectionTransformConfig

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _target_tensors(item: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    target = item["target"]
    keys = ("labels", "area", "iscrowd", "masks")
    return tuple(target[k] for k in keys if k in target)


class RandomSizeCrop(v2.Transform):
    """Crop a random ``h x w`` region, each side drawn uniformly from ``min_size..max_size``
    (capped by the image's side), at a uniformly random position (DETR's RandomSizeCrop)."""

    def __init__(self, min_size: int, max_size: int) -> None:
        super().__init__()
        if not 1 <= min_size <= max_size:
            raise ValueError(
                f"RandomSizeCrop: need 1 <= min_size <= max_size, got {min_size}, {max_size}"
            )
        self.min_size = min_size
        self.max_size = max_size

    def _side(self, extent: int) -> int:
        high = min(extent, self.max_size)
        low = min(self.min_size, high)
        return int(torch.randint(low, high + 1, ()).item())

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        crop_h, crop_w = self._side(height), self._side(width)
        top = int(torch.randint(0, height - crop_h + 1, ()).item())
        left = int(torch.randint(0, width - crop_w + 1, ()).item())
        return {"top": top, "left": left, "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


def detr_train_resize(cfg: DetectionTransformConfig) -> v2.Transform:
    """DETR's training geometry after the flip: resize, or resize + random crop + resize."""
    resize = v2.RandomShortestSize(cfg.scales, max_size=cfg.max_side, antialias=True)
    crop_then_resize = v2.Compose(
        [
            v2.RandomShortestSize(cfg.crop_scales, antialias=True),
            RandomSizeCrop(*cfg.crop_size),
            v2.RandomShortestSize(cfg.scales, max_size=cfg.max_side, antialias=True),
        ]
    )
    return v2.RandomChoice([resize, crop_then_resize], p=[0.5, 0.5])


def detection_transforms(cfg: DetectionTransformConfig) -> v2.Transform | None:
    """The preset for ``{"image", "target"}`` items, or None when it would do nothing.

    Boxes that become empty (cropped away, or resized below a pixel) are removed together
    with their labels, areas, crowd flags and masks (SanitizeBoundingBoxes).
    """
    steps: list[v2.Transform] = []
    if cfg.multiscale:
        if cfg.augment == "train":
            steps += [v2.RandomHorizontalFlip(), detr_train_resize(cfg)]
        elif cfg.augment == "eval":
            steps.append(
                v2.RandomShortestSize(cfg.eval_size, max_size=cfg.max_side, antialias=True)
            )
    else:
        if cfg.augment == "train":
            steps += [v2.RandomPhotometricDistort(p=0.5), v2.RandomHorizontalFlip()]
        if cfg.image_size is not None:
            steps.append(v2.Resize((cfg.image_size, cfg.image_size), antialias=True))
    if cfg.normalize:
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if not steps:
        return None
    # hard clamping: resized coordinates may pass the border by float rounding, which
    # SanitizeBoundingBoxes would take for an invalid box
    steps.append(v2.ClampBoundingBoxes(clamping_mode="hard"))
    steps.append(v2.SanitizeBoundingBoxes(labels_getter=_target_tensors))
    return v2.Compose(steps)
