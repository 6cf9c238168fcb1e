"""Crop plans: what every backend does to one image, drawn without decoding it.

A plan is the box of the full-size image that becomes the output (train: torchvision's
``RandomResizedCrop`` box; eval: the region that ``Resize(resize) + CenterCrop(size)`` keeps;
``augment: none``: the whole image) and whether it is mirrored. It is drawn from the torch
RNG in the same calls, in the same order, as ``v2.Compose([RandomResizedCrop,
RandomHorizontalFlip])``, so under the trainer's per-sample seeding every backend (torch
``reduced``/``full``, ``nvjpeg`` on the device, DALI) crops the same box and flips the same
images for the same ``(seed, epoch, index)``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from visionforge.errors import StorageError
from visionforge_resnet.configs import ImageNetFolderConfig
from visionforge_resnet.reduced_decode import CropBox, jpeg_size, random_resized_crop_box


@dataclass(frozen=True)
class CropPlan:
    """Output = ``box`` of the full-size image resized to ``size`` x ``size``, mirrored if
    ``flip``."""

    box: CropBox
    flip: bool


def image_size(data: bytes) -> tuple[int, int]:
    """``(height, width)`` from the file's header (libjpeg-turbo for JPEGs, else Pillow's
    lazy open, which reads only the header)."""
    size = jpeg_size(data)
    if size is not None:
        return size
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    return int(height), int(width)


def centre_box(height: int, width: int, size: int, resize_size: int) -> CropBox:
    """The part of a ``height`` x ``width`` image that ``Resize(resize_size)`` (shorter side)
    + ``CenterCrop(size)`` keeps, in full-size pixels (a square of ``size / resize_size`` of
    the shorter side, centred, at least one pixel)."""
    side = max(1, min(height, width, round(min(height, width) * size / resize_size)))
    return CropBox((height - side) // 2, (width - side) // 2, side, side)


def draw_plan(cfg: ImageNetFolderConfig, height: int, width: int) -> CropPlan:
    """The plan of one image under ``cfg``'s augmentation (train draws from the torch RNG)."""
    if cfg.augment == "train":
        box = random_resized_crop_box(height, width, cfg.scale, cfg.ratio)
        return CropPlan(box, bool(torch.rand(1) < cfg.flip_prob))
    if cfg.augment == "eval":
        resize = round(cfg.image_size / cfg.resize_ratio)
        return CropPlan(centre_box(height, width, cfg.image_size, resize), False)
    return CropPlan(CropBox(0, 0, height, width), False)


@dataclass(frozen=True)
class EncodedSample:
    """One sample as read from storage: the file, its header size, label and path."""

    data: bytes
    size: tuple[int, int]
    label: int
    path: str


def read_sample(folder: Any, index: int) -> EncodedSample:
    """Sample ``index`` of an ``ImageNetFolder``, not decoded; an unreadable header names
    the file."""
    data = folder.read_bytes(index)
    path = folder.display_path(index)
    try:
        size = image_size(data)
    except (OSError, ValueError) as err:
        raise StorageError(
            f"{path}: cannot read the image header ({err}); replace or remove the file"
        ) from None
    return EncodedSample(data, size, folder.label_of(index), path)


class PlannedItems:
    """Items ``{"encoded": bytes, "plan": CropPlan, "label": int, "path": str}`` of an
    ``imagenet_folder`` dataset: the file's bytes and its plan, nothing decoded. Wrap it in
    the trainer's ``SeededDataset`` for the per-sample seeding every backend shares."""

    def __init__(self, dataset: Any, cfg: ImageNetFolderConfig) -> None:
        self.dataset = dataset
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = read_sample(self.dataset, index)
        return {
            "encoded": sample.data,
            "plan": draw_plan(self.cfg, *sample.size),
            "label": sample.label,
            "path": sample.path,
        }
