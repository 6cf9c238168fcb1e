"""Hungarian matching of predictions to ground truth (DETR, Deformable DETR, DINO).

The cost of assigning query ``q`` to object ``t`` is ``cost_class * class + cost_bbox * L1
+ cost_giou * (-GIoU)``; scipy's ``linear_sum_assignment`` solves each image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from visionforge_dino.detr.targets import NormalizedTarget

ClassCost = Literal["softmax", "focal"]
Assignment = tuple[torch.Tensor, torch.Tensor]


class HungarianMatcher(nn.Module):
    """``forward(pred_logits [B,Q,C], pred_boxes [B,Q,4], targets) -> [(query_idx, target_idx)]``.

    ``class_cost="softmax"`` (DETR): ``-softmax(logits)[label]``. ``"focal"`` (Deformable
    DETR, DINO): the focal-loss difference between predicting and not predicting the label
    on sigmoid probabilities. Indices are int64 on the CPU, ordered by query.
    """

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        class_cost: ClassCost = "softmax",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if cost_class == cost_bbox == cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.class_cost = class_cost
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def _class_cost(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.class_cost == "softmax":
            return -logits.softmax(-1)[:, labels]
        prob = logits.sigmoid()[:, labels]
        alpha, gamma = self.focal_alpha, self.focal_gamma
        neg = (1 - alpha) * prob**gamma * -(1 - prob + 1e-8).log()
        pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
        return pos - neg

    @torch.no_grad()
    def forward(
        self,
        pred_logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        targets: Sequence[NormalizedTarget],
    ) -> list[Assignment]:
        batch, queries = pred_logits.shape[:2]
        logits = pred_logits.flatten(0, 1)
        boxes = pred_boxes.flatten(0, 1)
        labels = torch.cat([t["labels"] for t in targets])
        target_boxes = torch.cat([t["boxes"] for t in targets]).to(boxes.dtype)
        cost = (
            self.cost_bbox * torch.cdist(boxes, target_boxes, p=1)
            + self.cost_class * self._class_cost(logits, labels)
            - self.cost_giou
            * generalized_box_iou(
                box_convert(boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy")
            )
        )
        cost = cost.view(batch, queries, -1).cpu()
        sizes = [len(t["boxes"]) for t in targets]
        result: list[Assignment] = []
        for i, image_cost in enumerate(cost.split(sizes, -1)):
            rows, cols = linear_sum_assignment(image_cost[i].numpy())
            result.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return result
