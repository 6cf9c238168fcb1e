"""``decoder: nvjpeg``: JPEGs decoded and augmented on the training device.

Loader workers only read each file and draw its :class:`~visionforge_resnet.plans.CropPlan`
(crop box, flip: the same draws as every other backend); the batch then reaches the
training process as encoded bytes, where ``torchvision.io.decode_jpeg(list, device=...)``
decodes all JPEGs of it in one batched nvJPEG call and the crop, antialiased resize and flip
run there too. A 4-vCPU machine then only reads files. Files nvJPEG cannot take (PNG,
CMYK JPEGs) are decoded by the worker (``decode_image``) and follow the same steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from visionforge.config import LoaderConfig
from visionforge.engine.data import SeededDataset, torch_loader
from visionforge_resnet.configs import ImageNetFolderConfig
from visionforge_resnet.plans import CropPlan, PlannedItems
from visionforge_resnet.reduced_decode import jpeg_size


class DevicePlannedItems(PlannedItems):
    """:class:`PlannedItems` whose batches collate into ``{"encoded": [uint8 tensors],
    "jpeg": [bool], "plan": [CropPlan], "label": int64 [B]}``: a JPEG stays encoded, any
    other file is decoded here to RGB ``[3, H, W]``."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        data: bytes = item["encoded"]
        buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        is_jpeg = jpeg_size(data) is not None
        if not is_jpeg:
            buffer = decode_image(buffer, mode=ImageReadMode.RGB)
            buffer = buffer[0] if buffer.ndim == 4 else buffer
        return {**item, "encoded": buffer, "jpeg": is_jpeg}

    def collate_fn(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {
            "encoded": [item["encoded"] for item in items],
            "jpeg": [bool(item["jpeg"]) for item in items],
            "plan": [item["plan"] for item in items],
            "label": torch.tensor([item["label"] for item in items], dtype=torch.int64),
        }


def decode_batch(
    batch: dict[str, Any], cfg: ImageNetFolderConfig, device: torch.device
) -> dict[str, torch.Tensor]:
    """Decode a collated :class:`DevicePlannedItems` batch on ``device`` (one batched
    ``decode_jpeg`` call) and apply each plan there: uint8 ``[B, 3, S, S]`` + labels."""
    encoded: list[torch.Tensor] = batch["encoded"]
    jpegs = [data for data, is_jpeg in zip(encoded, batch["jpeg"], strict=True) if is_jpeg]
    decoded = iter(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device) if jpegs else [])
    interpolation = InterpolationMode(cfg.interpolation)
    size = cfg.image_size
    images = []
    for data, is_jpeg, plan in zip(encoded, batch["jpeg"], batch["plan"], strict=True):
        image = next(decoded) if is_jpeg else data.to(device, non_blocking=True)
        images.append(apply_plan(image, plan, cfg, size, interpolation))
    return {"image": torch.stack(images), "label": batch["label"].to(device)}


def apply_plan(
    image: torch.Tensor,
    plan: CropPlan,
    cfg: ImageNetFolderConfig,
    size: int,
    interpolation: InterpolationMode,
) -> torch.Tensor:
    """The torch reference steps on a fully decoded image: train ``resized_crop`` of the
    plan's box (+ flip), eval ``Resize(resize) + CenterCrop(size)``, none a square resize."""
    if cfg.augment == "eval":
        resize = round(size / cfg.resize_ratio)
        image = F.resize(image, [resize], interpolation=interpolation, antialias=True)
        return F.center_crop(image, [size, size])
    box = plan.box
    out = F.resized_crop(
        image,
        box.top,
        box.left,
        box.height,
        box.width,
        [size, size],
        interpolation=interpolation,
        antialias=True,
    )
    return F.horizontal_flip(out) if plan.flip else out


class DeviceDecodeLoader:
    """A :class:`~visionforge.interfaces.BatchLoader`: a torch DataLoader of encoded,
    planned items (workers, sampler and seeding as the trainer's), decoded on ``device``."""

    backend = "torch-nvjpeg"

    def __init__(
        self,
        seeded: SeededDataset,
        sampler: Any,
        batch_size: int,
        cfg: LoaderConfig,
        seed: int,
        *,
        device: torch.device,
    ) -> None:
        self.dataset = seeded
        folder: Any = seeded.dataset
        self.cfg: ImageNetFolderConfig = folder.config
        self.device = device
        planned = SeededDataset(DevicePlannedItems(folder, self.cfg), seeded.seed)
        self.loader = torch_loader(planned, sampler, batch_size, cfg, seed, pin_memory=False)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.loader:
            yield decode_batch(batch, self.cfg, self.device)
