"""Contrastive denoising (DINO's CDN): noised copies of the ground truth fed to the decoder
beside the matching queries, in groups of positives (small box noise, to reconstruct) and
negatives (larger noise, to reject).

Layout of the ``pad`` denoising queries that precede the ``num_queries`` matching queries:
``groups`` groups of ``2 * max_objects`` slots; in group ``g`` the positives of image ``b``
sit at ``g * 2 * max_objects + j`` and its negatives ``max_objects`` later, for
``j < objects_b``. Unused slots hold zero content and a zero logit anchor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from visionforge_dino.detr.targets import NormalizedTarget
from visionforge_dino.dino.transformer import inverse_sigmoid


@dataclass
class DenoisingQueries:
    """Denoising queries of one batch and what the loss needs to supervise them."""

    content: Tensor
    """``[B, pad, C]`` label embeddings (noised labels)."""
    anchors: Tensor
    """``[B, pad, 4]`` noised boxes, logit space."""
    attn_mask: Tensor
    """``[pad + Q, pad + Q]`` bool, True where attention is blocked: matching queries do not
    see denoising ones, and groups do not see each other."""
    groups: int
    max_objects: int

    @property
    def pad(self) -> int:
        return self.groups * 2 * self.max_objects


def group_count(dn_number: int, max_objects: int) -> int:
    """Groups for ``dn_number`` denoising queries per polarity: ``dn_number // max_objects``,
    at least one (DINO-4scale: 100 queries, so 10 objects per image give 10 groups)."""
    return max(1, dn_number // max(1, max_objects))


def noised_boxes(boxes: Tensor, negative: Tensor, scale: float) -> Tensor:
    """Move each corner of ``(cx, cy, w, h)`` ``boxes`` by up to ``scale`` x half the box size
    (positives) or between 1x and 2x that (rows where ``negative``), clamped to the image."""
    if scale <= 0:
        return boxes
    corners = box_convert(boxes, "cxcywh", "xyxy")
    half = boxes[:, 2:].repeat(1, 2) / 2
    sign = torch.randint(0, 2, boxes.shape, device=boxes.device).to(boxes.dtype) * 2 - 1
    amount = torch.rand_like(boxes) + negative[:, None].to(boxes.dtype)
    corners = (corners + sign * amount * half * scale).clamp(0.0, 1.0)
    return box_convert(corners, "xyxy", "cxcywh")


def noised_labels(labels: Tensor, ratio: float, num_classes: int) -> Tensor:
    """Replace each label, with probability ``ratio / 2``, by a uniformly drawn class."""
    if ratio <= 0:
        return labels
    flip = torch.rand(labels.shape, device=labels.device) < ratio * 0.5
    random = torch.randint_like(labels, 0, num_classes)
    return torch.where(flip, random, labels)


def denoising_queries(
    targets: Sequence[NormalizedTarget],
    *,
    dn_number: int,
    label_noise_ratio: float,
    box_noise_scale: float,
    num_classes: int,
    num_queries: int,
    label_embedding: nn.Embedding,
) -> DenoisingQueries | None:
    """Build the batch's denoising queries; None when no image has an object."""
    counts = [int(t["labels"].numel()) for t in targets]
    max_objects = max(counts, default=0)
    if max_objects == 0 or dn_number <= 0:
        return None
    weight = label_embedding.weight
    device, dtype = weight.device, weight.dtype
    groups = group_count(dn_number, max_objects)
    labels = torch.cat([t["labels"] for t in targets]).to(device)
    boxes = torch.cat([t["boxes"] for t in targets]).to(device=device, dtype=dtype)
    total = labels.numel()

    # chunks in order: group 0 positives, group 0 negatives, group 1 positives, ...
    chunks = 2 * groups
    all_labels = noised_labels(labels.repeat(chunks), label_noise_ratio, num_classes)
    negative = (torch.arange(chunks, device=device) % 2 == 1).repeat_interleave(total)
    all_boxes = noised_boxes(boxes.repeat(chunks, 1), negative, box_noise_scale)

    batch = len(targets)
    pad = chunks * max_objects
    content = torch.zeros(batch, pad, weight.shape[1], dtype=dtype, device=device)
    anchors = torch.zeros(batch, pad, 4, dtype=dtype, device=device)
    image_of = torch.cat(
        [torch.full((n,), b, dtype=torch.long, device=device) for b, n in enumerate(counts)]
    )
    slot = torch.cat([torch.arange(n, device=device) for n in counts])
    rows = image_of.repeat(chunks)
    cols = (slot[None] + max_objects * torch.arange(chunks, device=device)[:, None]).flatten()
    content[rows, cols] = label_embedding(all_labels)
    anchors[rows, cols] = inverse_sigmoid(all_boxes)

    size = pad + num_queries
    mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    mask[pad:, :pad] = True
    span = 2 * max_objects
    for group in range(groups):
        start, end = group * span, (group + 1) * span
        mask[start:end, :start] = True
        mask[start:end, end:pad] = True
    return DenoisingQueries(content, anchors, mask, groups, max_objects)
