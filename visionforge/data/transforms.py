"""Classification transform presets (torchvision transforms v2) and device-side normalization."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

Augment = Literal["train", "eval", "none"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def classification_transforms(
    image_size: int,
    augment: Augment = "eval",
    *,
    resize_ratio: float = 0.875,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    normalize: bool = True,
) -> v2.Compose:
    """The preset for uint8 ``tv_tensors.Image`` inputs.

    ``train``: RandomResizedCrop(image_size) + RandomHorizontalFlip; ``eval``:
    Resize(round(image_size / resize_ratio)) + CenterCrop(image_size); ``none``: Resize to
    ``image_size`` x ``image_size``. Geometric steps run on uint8 (cheap), then the image is
    converted to float in [0, 1] and normalized; with ``normalize=False`` it stays uint8 so a
    batch can be normalized on the training device with :func:`device_normalize`.
    """
    steps: list[v2.Transform]
    if augment == "train":
        steps = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    elif augment == "eval":
        steps = [
            v2.Resize(round(image_size / resize_ratio), antialias=True),
            v2.CenterCrop(image_size),
        ]
    elif augment == "none":
        steps = [v2.Resize((image_size, image_size), antialias=True)]
    else:
        raise ValueError(f"augment: expected 'train', 'eval' or 'none', got {augment!r}")
    if normalize:
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def device_normalize(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Scale a uint8 batch ``[B, C, H, W]`` to float in [0, 1] and normalize it, on its device.

    Float inputs are taken as already scaled to [0, 1] and only normalized.
    """
    floats = F.to_dtype(images, torch.float32, scale=True)
    return F.normalize(floats, list(mean), list(std))
