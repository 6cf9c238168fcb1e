"""DETR's set criterion (the ``detr`` loss): Hungarian matching, then per decoder layer
cross-entropy with a down-weighted no-object class, L1 and GIoU on the matched boxes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from visionforge_dino.detr.configs import DetrLossConfig
from visionforge_dino.detr.matcher import Assignment, HungarianMatcher
from visionforge_dino.detr.targets import NormalizedTarget, normalize_targets


def matched_query_index(indices: Sequence[Assignment]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch_idx, query_idx)`` of every matched prediction, to index ``[B, Q, ...]``."""
    batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)])
    return batch_idx, torch.cat([q for q, _ in indices])


def average_num_boxes(targets: Sequence[NormalizedTarget], device: torch.device) -> torch.Tensor:
    """Objects per process (averaged over DDP ranks, at least 1): the losses' normalizer."""
    count = torch.tensor(
        [float(sum(len(t["labels"]) for t in targets))], dtype=torch.float64, device=device
    )
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        world = dist.get_world_size()
    return torch.clamp(count / world, min=1)[0]


class DetrCriterion(nn.Module):
    """``loss(outputs, batch) -> {"loss", "loss_ce", "loss_bbox", "loss_giou", ...}``.

    ``outputs``: ``pred_logits`` ``[B,Q,K+1]`` (last = no-object), ``pred_boxes`` ``[B,Q,4]``
    and optionally ``aux_outputs``; their terms get the suffix ``_i`` (decoder layer i), as
    in the original. ``batch["target"]``: per-image ``boxes`` (BoundingBoxes XYXY px) and
    ``labels`` (0..K-1). ``class_error`` (% of matched queries misclassified, last layer) and
    ``cardinality_error`` are logged, not trained.
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        *,
        ce_weight: float = 1.0,
        bbox_weight: float = 5.0,
        giou_weight: float = 2.0,
        eos_coef: float = 0.1,
    ) -> None:
        super().__init__()
        self.matcher = matcher
        self.weights = {"loss_ce": ce_weight, "loss_bbox": bbox_weight, "loss_giou": giou_weight}
        self.eos_coef = eos_coef

    def _layer_losses(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        targets: Sequence[NormalizedTarget],
        num_boxes: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        indices = self.matcher(logits, boxes, targets)
        idx = tuple(i.to(logits.device) for i in matched_query_index(indices))
        matched_labels = torch.cat(
            [t["labels"][j] for t, (_, j) in zip(targets, indices, strict=True)]
        )
        num_classes = logits.shape[-1] - 1
        classes = torch.full(logits.shape[:2], num_classes, dtype=torch.int64, device=logits.device)
        classes[idx] = matched_labels
        class_weight = torch.ones(num_classes + 1, dtype=logits.dtype, device=logits.device)
        class_weight[-1] = self.eos_coef
        loss_ce = F.cross_entropy(logits.transpose(1, 2), classes, class_weight)

        src = boxes[idx]
        dst = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices, strict=True)])
        loss_bbox = F.l1_loss(src, dst, reduction="sum") / num_boxes
        # the diagonal of the pairwise GIoU is the original's formula (no epsilon)
        giou = generalized_box_iou(
            box_convert(src, "cxcywh", "xyxy"), box_convert(dst, "cxcywh", "xyxy")
        )
        loss_giou = (1 - giou.diagonal()).sum() / num_boxes
        losses = {
            "loss_ce": loss_ce,
            "loss_bbox": loss_bbox.to(logits.dtype),
            "loss_giou": loss_giou.to(logits.dtype),
        }
        with torch.no_grad():
            if len(matched_labels):
                correct = logits[idx].argmax(-1) == matched_labels
                class_error = 100 - 100 * correct.to(logits.dtype).mean()
            else:
                class_error = torch.zeros((), dtype=logits.dtype, device=logits.device)
        return losses, class_error

    def forward(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        logits: torch.Tensor = outputs["pred_logits"]
        targets = normalize_targets(batch["target"], logits.dtype, logits.device)
        num_boxes = average_num_boxes(targets, logits.device).to(logits.dtype)
        layers = [("", outputs)] + [
            (f"_{i}", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))
        ]
        result: dict[str, torch.Tensor] = {}
        total = torch.zeros((), dtype=logits.dtype, device=logits.device)
        for suffix, layer in layers:
            losses, class_error = self._layer_losses(
                layer["pred_logits"], layer["pred_boxes"], targets, num_boxes
            )
            for name, value in losses.items():
                result[name + suffix] = value
                total = total + self.weights[name] * value
            if not suffix:
                result["class_error"] = class_error
        with torch.no_grad():
            predicted = (logits.argmax(-1) != logits.shape[-1] - 1).sum(1).to(logits.dtype)
            expected = torch.tensor(
                [float(len(t["labels"])) for t in targets], dtype=logits.dtype, device=logits.device
            )
            result["cardinality_error"] = F.l1_loss(predicted, expected)
        return {"loss": total, **result}


def build_detr_loss(cfg: DetrLossConfig) -> DetrCriterion:
    """Builder of the ``detr`` loss."""
    matcher = HungarianMatcher(cfg.cost_class, cfg.cost_bbox, cfg.cost_giou)
    return DetrCriterion(
        matcher,
        ce_weight=cfg.ce_weight,
        bbox_weight=cfg.bbox_weight,
        giou_weight=cfg.giou_weight,
        eos_coef=cfg.eos_coef,
    )
