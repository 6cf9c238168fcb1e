"""DINO's criterion (the ``dino`` loss): Hungarian matching with focal class costs, then per
layer a sigmoid focal loss over all queries and classes plus L1 and GIoU on the matched boxes.

Terms, as the original names them: ``loss_ce``/``loss_bbox``/``loss_giou`` (last decoder
layer), with suffix ``_i`` (decoder layer i), ``_interm`` (the selected encoder proposals),
``_dn`` and ``_dn_i`` (denoising groups, matched by construction). ``loss`` is their sum
weighted by ``cls_weight``/``bbox_weight``/``giou_weight`` (encoder terms also by
``encoder_weight``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from visionforge_dino.detr.criterion import average_num_boxes, matched_query_index
from visionforge_dino.detr.matcher import Assignment, HungarianMatcher
from visionforge_dino.detr.targets import NormalizedTarget, normalize_targets
from visionforge_dino.dino.configs import DinoLossConfig


class DinoCriterion(nn.Module):
    """``loss(outputs, batch) -> {"loss", "loss_ce", "loss_bbox", "loss_giou", ...}`` for the
    outputs of :class:`~visionforge_dino.dino.model.DINO`."""

    def __init__(
        self,
        matcher: HungarianMatcher,
        *,
        cls_weight: float = 1.0,
        bbox_weight: float = 5.0,
        giou_weight: float = 2.0,
        encoder_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.matcher = matcher
        self.weights = {"loss_ce": cls_weight, "loss_bbox": bbox_weight, "loss_giou": giou_weight}
        self.encoder_weight = encoder_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def layer_losses(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        targets: Sequence[NormalizedTarget],
        indices: Sequence[Assignment],
        num_boxes: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Focal loss over every query and class (unmatched queries are background), L1 and
        GIoU over the matched pairs, each divided by ``num_boxes``."""
        idx = tuple(i.to(logits.device) for i in matched_query_index(indices))
        labels = torch.cat(
            [
                t["labels"][j.to(t["labels"].device)]
                for t, (_, j) in zip(targets, indices, strict=True)
            ]
        )
        onehot = torch.zeros_like(logits)
        onehot[idx[0], idx[1], labels.to(logits.device)] = 1.0
        loss_ce = (
            sigmoid_focal_loss(
                logits, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
            )
            / num_boxes
        )
        src = boxes[idx]
        dst = torch.cat(
            [
                t["boxes"][j.to(t["boxes"].device)]
                for t, (_, j) in zip(targets, indices, strict=True)
            ]
        ).to(boxes.dtype)
        loss_bbox = F.l1_loss(src, dst, reduction="sum") / num_boxes
        giou = generalized_box_iou(
            box_convert(src, "cxcywh", "xyxy"), box_convert(dst, "cxcywh", "xyxy")
        )
        loss_giou = (1 - giou.diagonal()).sum() / num_boxes
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def _matched(
        self,
        layer: Mapping[str, torch.Tensor],
        targets: Sequence[NormalizedTarget],
        num_boxes: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        indices = self.matcher(layer["pred_logits"], layer["pred_boxes"], targets)
        return self.layer_losses(
            layer["pred_logits"], layer["pred_boxes"], targets, indices, num_boxes
        )

    def forward(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        logits: torch.Tensor = outputs["pred_logits"]
        targets = normalize_targets(batch["target"], logits.dtype, logits.device)
        num_boxes = average_num_boxes(targets, logits.device).to(logits.dtype)
        terms: dict[str, tuple[torch.Tensor, float]] = {}

        def add(losses: Mapping[str, torch.Tensor], suffix: str, scale: float = 1.0) -> None:
            for name, value in losses.items():
                terms[name + suffix] = (value, self.weights[name] * scale)

        add(self._matched(outputs, targets, num_boxes), "")
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            add(self._matched(aux, targets, num_boxes), f"_{i}")
        if "interm_outputs" in outputs:
            add(
                self._matched(outputs["interm_outputs"], targets, num_boxes),
                "_interm",
                self.encoder_weight,
            )
        dn_layers = outputs.get("dn_outputs")
        if dn_layers:
            meta = outputs["dn_meta"]
            groups, max_objects = int(meta["groups"]), int(meta["max_objects"])
            indices = [
                self._dn_assignment(len(t["labels"]), groups, max_objects, logits.device)
                for t in targets
            ]
            dn_boxes = num_boxes * groups
            for i, layer in enumerate(dn_layers):
                suffix = "_dn" if i == len(dn_layers) - 1 else f"_dn_{i}"
                add(
                    self.layer_losses(
                        layer["pred_logits"], layer["pred_boxes"], targets, indices, dn_boxes
                    ),
                    suffix,
                )
        total = sum(
            (value * weight for value, weight in terms.values()),
            torch.zeros((), dtype=logits.dtype, device=logits.device),
        )
        return {"loss": total, **{name: value for name, (value, _) in terms.items()}}

    @staticmethod
    def _dn_assignment(
        objects: int, groups: int, max_objects: int, device: torch.device
    ) -> Assignment:
        """Positive denoising query of each (group, object) and its object index."""
        target = torch.arange(objects, device=device)
        starts = torch.arange(groups, device=device) * 2 * max_objects
        return (starts[:, None] + target[None]).flatten(), target.repeat(groups)


def build_dino_loss(cfg: DinoLossConfig) -> DinoCriterion:
    """Builder of the ``dino`` loss."""
    matcher = HungarianMatcher(
        cfg.cost_class,
        cfg.cost_bbox,
        cfg.cost_giou,
        class_cost="focal",
        focal_alpha=cfg.focal_alpha,
        focal_gamma=cfg.focal_gamma,
    )
    return DinoCriterion(
        matcher,
        cls_weight=cfg.cls_weight,
        bbox_weight=cfg.bbox_weight,
        giou_weight=cfg.giou_weight,
        encoder_weight=cfg.encoder_weight,
        focal_alpha=cfg.focal_alpha,
        focal_gamma=cfg.focal_gamma,
    )
