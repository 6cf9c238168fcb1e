"""Collate functions for batches of dict items."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch.utils.data import default_collate

from visionforge.interfaces import DetectionBatch, DetectionTarget


def collate_with_lists(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Collate dict items, keeping what cannot be stacked as per-item lists.

    Per key: tensors of one shape are stacked, tensors of different shapes (e.g. detection
    images of varying size) become a list, mappings (per-item detection targets with a
    variable number of boxes) become a list of dicts, everything else goes through torch's
    ``default_collate`` (ints -> int64 tensor, strings -> list).
    """
    if not items:
        raise ValueError("collate_with_lists: got an empty list of items")
    keys = items[0].keys()
    for position, item in enumerate(items[1:], start=1):
        if item.keys() != keys:
            raise ValueError(
                f"collate_with_lists: item {position} has keys {sorted(item.keys())}, "
                f"item 0 has {sorted(keys)}; every item of a dataset needs the same keys"
            )
    batch: dict[str, Any] = {}
    for key in keys:
        values = [item[key] for item in items]
        first = values[0]
        ragged = isinstance(first, torch.Tensor) and any(v.shape != first.shape for v in values)
        if ragged or isinstance(first, Mapping):
            batch[key] = list(values)
        else:
            batch[key] = default_collate(values)
    return batch


def _padded_extent(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def _size_pair(value: Any) -> tuple[int, int]:
    height, width = (int(v) for v in value)
    return height, width


def detection_collate(
    items: Sequence[Mapping[str, Any]], *, pad_to_multiple: int = 1
) -> DetectionBatch:
    """A :class:`~visionforge.interfaces.DetectionBatch` from ``{"image", "target"}`` items.

    Images (``[C, H, W]``, any dtype) are padded with zeros at the bottom and right to the
    batch's largest height and width, rounded up to ``pad_to_multiple``; ``mask`` is True on
    the padding. Each target is kept as a dict (boxes stay ``tv_tensors.BoundingBoxes`` in
    pixels of the unpadded image) with ``size`` (the image's ``(H, W)`` in the batch) added
    and ``orig_size`` made a ``(H, W)`` tuple (the image's size itself when missing).
    """
    if not items:
        raise ValueError("detection_collate: got an empty list of items")
    if pad_to_multiple < 1:
        raise ValueError(f"detection_collate: pad_to_multiple must be >= 1, got {pad_to_multiple}")
    images: list[torch.Tensor] = []
    targets: list[DetectionTarget] = []
    for position, item in enumerate(items):
        if "image" not in item or "target" not in item:
            raise ValueError(
                f"detection_collate: item {position} has keys {sorted(item)}; a detection item "
                "needs 'image' and 'target'"
            )
        image = item["image"].as_subclass(torch.Tensor)
        channels = images[0].shape[0] if images else image.shape[0]
        if image.ndim != 3 or image.shape[0] != channels:
            raise ValueError(
                f"detection_collate: item {position} has an image of shape "
                f"{tuple(image.shape)}; expected [C, H, W] with the channels of item 0"
            )
        if images and image.dtype != images[0].dtype:
            raise ValueError(
                f"detection_collate: item {position} is {image.dtype}, item 0 is "
                f"{images[0].dtype}; a dataset must yield one image dtype"
            )
        images.append(image)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        target = dict(item["target"])
        target["orig_size"] = _size_pair(target.get("orig_size", size))
        target["size"] = size
        targets.append(cast(DetectionTarget, target))
    height = _padded_extent(max(i.shape[-2] for i in images), pad_to_multiple)
    width = _padded_extent(max(i.shape[-1] for i in images), pad_to_multiple)
    first = images[0]
    batch = first.new_zeros((len(images), first.shape[0], height, width))
    mask = torch.ones((len(images), height, width), dtype=torch.bool)
    for index, image in enumerate(images):
        h, w = image.shape[-2:]
        batch[index, :, :h, :w].copy_(image)
        mask[index, :h, :w] = False
    return DetectionBatch(image=batch, mask=mask, target=targets)
