"""Detection transform presets (torchvision transforms v2, boxes follow the image)."""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2

from visionforge_coco.configs import DetectionTransformConfig

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _target_tensors(item: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    target = item["target"]
    keys = ("labels", "area", "iscrowd", "masks")
    return tuple(target[k] for k in keys if k in target)


def detection_transforms(cfg: DetectionTransformConfig) -> v2.Transform | None:
    """The preset for ``{"image", "target"}`` items, or None when it would do nothing.

    Boxes that become empty (e.g. resized below a pixel) are removed together with their
    labels, areas, crowd flags and masks (SanitizeBoundingBoxes).
    """
    steps: list[v2.Transform] = []
    if cfg.augment == "train":
        steps += [v2.RandomPhotometricDistort(p=0.5), v2.RandomHorizontalFlip()]
    if cfg.image_size is not None:
        steps.append(v2.Resize((cfg.image_size, cfg.image_size), antialias=True))
    if cfg.normalize:
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if not steps:
        return None
    steps.append(v2.SanitizeBoundingBoxes(labels_getter=_target_tensors))
    return v2.Compose(steps)
