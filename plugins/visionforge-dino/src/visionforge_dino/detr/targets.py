"""Detection targets in the form set-prediction losses compare against."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import torch
from torchvision.ops import box_convert


class NormalizedTarget(TypedDict):
    """One image's ground truth: ``labels`` ``[N]`` int64, ``boxes`` ``[N,4]`` (cx, cy, w, h)
    relative to the image's unpadded size (the models' ``pred_boxes`` convention)."""

    labels: torch.Tensor
    boxes: torch.Tensor


def normalize_targets(
    targets: Sequence[Mapping[str, Any]], dtype: torch.dtype, device: torch.device
) -> list[NormalizedTarget]:
    """Batch targets (``boxes`` as ``tv_tensors.BoundingBoxes`` XYXY pixels of the image in
    the batch) -> :class:`NormalizedTarget`, scaled by each box set's ``canvas_size``."""
    result: list[NormalizedTarget] = []
    for target in targets:
        boxes = target["boxes"]
        height, width = boxes.canvas_size
        xyxy = boxes.as_subclass(torch.Tensor).to(device=device, dtype=dtype).reshape(-1, 4)
        scale = torch.tensor([width, height, width, height], dtype=dtype, device=device)
        result.append(
            {
                "labels": target["labels"].to(device=device, dtype=torch.int64),
                "boxes": box_convert(xyxy, "xyxy", "cxcywh") / scale,
            }
        )
    return result
