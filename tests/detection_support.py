"""A tiny detector and set-prediction loss for the detection-path tests (no tests here).

``TinyDetector`` satisfies the Model and Predictor protocols the way DETR does: per-query
class logits (last class = no object) and sigmoid cx, cy, w, h relative to the unpadded
image; ``postprocess`` turns them into xyxy pixels of the original image. ``SetLoss``
matches queries to targets with scipy's Hungarian solver (class + L1 cost) and keeps every
output in the graph when a batch has no boxes at all (background-only images under DDP).
``register()`` adds ``tiny_detector`` and ``set_loss`` under the ``detectiontest`` namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert

import visionforge
from visionforge.config import ComponentConfig

NAMESPACE = "detectiontest"

TINY_DINO: dict[str, Any] = {
    "type": "dino_r50_4scale",
    "num_classes": 3,
    "backbone": "resnet18",
    "hidden_dim": 32,
    "nheads": 4,
    "enc_layers": 1,
    "dec_layers": 2,
    "dim_feedforward": 32,
    "num_queries": 12,
    "group_norm_groups": 8,
    "dn_number": 6,
    "num_select": 10,
    "msda_backend": "pytorch",
}
"""A DINO small enough for CPU tests (the core DDP test and the dino plugin's tests)."""


class TinyDetectorConfig(ComponentConfig):
    num_classes: int = 3
    num_queries: int = 6
    width: int = 8
    category_ids: list[int] | None = None
    class_names: list[str] | None = None


class TinyDetector(nn.Module):
    """conv stack -> pooled grid -> linear heads for ``num_queries`` boxes."""

    def __init__(self, cfg: TinyDetectorConfig) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        self.num_queries = cfg.num_queries
        self.features = nn.Sequential(
            nn.Conv2d(3, cfg.width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(cfg.width, cfg.width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.class_head = nn.Linear(cfg.width * 16, cfg.num_queries * (cfg.num_classes + 1))
        self.box_head = nn.Linear(cfg.width * 16, cfg.num_queries * 4)
        if cfg.category_ids is not None:
            self.category_ids = list(cfg.category_ids)
            self.class_names = list(cfg.class_names or map(str, cfg.category_ids))

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        features = self.features(batch["image"].float())
        b, q = features.shape[0], self.num_queries
        return {
            "pred_logits": self.class_head(features).view(b, q, self.num_classes + 1),
            "pred_boxes": self.box_head(features).view(b, q, 4).sigmoid(),
        }

    def postprocess(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        scores, labels = outputs["pred_logits"].softmax(-1)[..., :-1].max(-1)
        boxes = box_convert(outputs["pred_boxes"], "cxcywh", "xyxy")
        results = []
        for index, target in enumerate(batch["target"]):
            height, width = target["orig_size"]
            scale = boxes.new_tensor([width, height, width, height])
            results.append(
                {"boxes": boxes[index] * scale, "scores": scores[index], "labels": labels[index]}
            )
        return results

    def export_module(self) -> nn.Module:
        return TinyDetectorExport(self)


class TinyDetectorExport(nn.Module):
    """Image in; ``boxes`` (xyxy pixels of the input), ``scores``, ``labels`` out, best first."""

    def __init__(self, detector: TinyDetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.detector({"image": image})
        scores, labels = outputs["pred_logits"].softmax(-1)[..., :-1].max(-1)
        height, width = image.shape[-2:]
        scale = scores.new_tensor([width, height, width, height])
        boxes = box_convert(outputs["pred_boxes"], "cxcywh", "xyxy") * scale
        top, order = scores.topk(self.detector.num_queries, dim=1)
        return {
            "boxes": boxes.gather(1, order[..., None].expand(-1, -1, 4)),
            "scores": top,
            "labels": labels.gather(1, order),
        }


class SetLossConfig(ComponentConfig):
    eos_coef: float = Field(0.1, ge=0)
    box_weight: float = 5.0


class SetLoss(nn.Module):
    """Hungarian-matched CE (no-object down-weighted) + L1 on normalized cx, cy, w, h."""

    def __init__(self, cfg: SetLossConfig) -> None:
        super().__init__()
        self.eos_coef = cfg.eos_coef
        self.box_weight = cfg.box_weight

    def forward(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        num_classes = logits.shape[-1] - 1
        classes = torch.full(logits.shape[:2], num_classes, dtype=torch.long, device=logits.device)
        matched_pred, matched_true = [], []
        for index, target in enumerate(batch["target"]):
            height, width = target["size"]
            scale = boxes.new_tensor([width, height, width, height])
            true = box_convert(
                target["boxes"].as_subclass(torch.Tensor).to(boxes) / scale, "xyxy", "cxcywh"
            )
            labels = target["labels"].to(logits.device)
            cost = -logits[index].softmax(-1)[:, labels] + torch.cdist(boxes[index], true, p=1)
            rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
            rows_t, cols_t = (
                torch.as_tensor(rows, dtype=torch.long),
                torch.as_tensor(cols, dtype=torch.long),
            )
            classes[index, rows_t] = labels[cols_t]
            matched_pred.append(boxes[index, rows_t])  # empty for background-only images
            matched_true.append(true[cols_t])
        weight = logits.new_ones(num_classes + 1)
        weight[-1] = self.eos_coef
        loss_ce = F.cross_entropy(logits.flatten(0, 1), classes.flatten(), weight)
        pred, true = torch.cat(matched_pred), torch.cat(matched_true)
        loss_bbox = F.l1_loss(pred, true, reduction="sum") / max(1, len(true))
        return {
            "loss": loss_ce + self.box_weight * loss_bbox,
            "loss_ce": loss_ce,
            "loss_bbox": loss_bbox,
        }


def register() -> None:
    """Register ``tiny_detector`` and ``set_loss`` once per process."""
    if f"{NAMESPACE}:tiny_detector" in visionforge.models.loaded_names():
        return
    visionforge.models.register(
        "tiny_detector", config=TinyDetectorConfig, builder=TinyDetector, namespace=NAMESPACE
    )
    visionforge.losses.register(
        "set_loss", config=SetLossConfig, builder=SetLoss, namespace=NAMESPACE
    )


def detection_recipe(output: str, **blocks: Any) -> dict[str, Any]:
    """A tiny detection recipe on ``synthetic_shapes`` (48 px) with coco_bbox evaluation."""
    trainer = {
        "epochs": 1,
        "batch_size": 4,
        "device": "cpu",
        "loggers": ["csv"],
        "log_every_steps": 1,
        "output": output,
        **blocks.pop("trainer", {}),
    }
    data = {
        "train": {
            "type": "synthetic_shapes",
            "num_images": 16,
            "shape_size": 48,
            "augment": "train",
        },
        "val": {"type": "synthetic_shapes", "num_images": 10, "shape_size": 48, "seed": 1},
    }
    return {
        "name": "tinydet",
        "model": {"type": "tiny_detector"},
        "data": {**data, **blocks.pop("data", {}), "normalize_on_device": [[0.5] * 3, [0.25] * 3]},
        "loss": {"type": "set_loss"},
        "evaluator": {"type": "coco_bbox"},
        "optimizer": {"type": "adamw", "lr": 1e-3},
        "trainer": trainer,
        **blocks,
    }


def _main() -> int:
    """Script mode for subprocess tests: ``python detection_support.py RECIPE.json
    [worker options]`` (also under torchrun, one process per rank; optional
    ``--kill-at STEP`` SIGKILLs the process after that optimizer step)."""
    import os
    import signal
    import sys

    from visionforge.engine import worker

    args = sys.argv[1:]
    register()
    if "--kill-at" in args:
        at = args.index("--kill-at")
        kill_at = int(args[at + 1])
        del args[at : at + 2]

        class Killer:
            @visionforge.hookimpl
            def visionforge_train_step_end(self, trainer: Any, step: int, losses: Any) -> None:
                if step == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

        visionforge.plugins.register_plugin("detectiontest-killer", Killer())
    return worker.main(args)


if __name__ == "__main__":
    raise SystemExit(_main())
