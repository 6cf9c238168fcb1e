"""The ``coco_bbox`` / ``coco_segm`` evaluators (the trainer's Evaluator protocol).

``update(outputs, batch)`` takes ``outputs["predictions"]`` (what the engine adds from the
model's ``postprocess``; labels already in the dataset's label space) or, from models that
post-process themselves, ``outputs["detections"]``: one dict per image with
``boxes`` (XYXY, absolute pixels of the *original* image), ``scores`` and ``labels``
(contiguous 0..K-1) and, for segm, ``masks`` ([N, H, W] in the original size, bool or
probabilities thresholded at 0.5). ``batch["target"]`` (or ``"targets"``) gives each
image's ``image_id``. Labels are mapped back to the ground truth's category ids (label
``i`` is the i-th category by ascending id, as in the ``coco`` dataset).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from pycocotools import mask as mask_utils

from visionforge.errors import ConfigError
from visionforge.interfaces import class_name
from visionforge_coco.cocofile import contiguous_categories
from visionforge_coco.configs import CocoEvaluatorConfig
from visionforge_coco.evaluation import CocoEvalResult, IouType, evaluate_coco, load_ground_truth
from visionforge_coco.problems import DataFormatError
from visionforge_coco.report import write_eval_report


class CocoEvaluator:
    """Accumulates detections (and, without an annotations file, ground truth) per image.

    Without an annotations file, per-class metrics are named by ``class_names`` (given by the
    trainer from the dataset, :class:`~visionforge.interfaces.NamedClasses`), else by label."""

    primary_metric = "AP"
    mode: Literal["max", "min"] = "max"

    def __init__(self, cfg: CocoEvaluatorConfig, iou_type: IouType) -> None:
        self.cfg = cfg
        self.iou_type = iou_type
        self.ground_truth: dict[str, Any] | None = None
        self.category_ids: list[int] | None = None
        self.class_names: list[str] | None = None
        if cfg.annotations is not None:
            self.ground_truth = load_ground_truth(cfg.annotations)
            self.category_ids = contiguous_categories(self.ground_truth)[0]
        elif iou_type == "segm":
            raise ConfigError("evaluator.annotations: coco_segm needs the ground-truth JSON")
        self.last: CocoEvalResult | None = None
        self.reset()

    def reset(self) -> None:
        self._detections: list[dict[str, Any]] = []
        self._images: dict[int, dict[str, Any]] = {}
        self._gt: list[dict[str, Any]] = []

    def _category(self, label: int) -> int:
        if self.category_ids is None:
            return label
        if not 0 <= label < len(self.category_ids):
            raise DataFormatError(
                f"coco evaluator: label {label} is outside 0.."
                f"{len(self.category_ids) - 1} of the ground truth"
            )
        return self.category_ids[label]

    def update(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        """Add one batch of detections (see the module docstring for the format)."""
        detections = outputs.get("predictions", outputs.get("detections"))
        if detections is None:
            raise DataFormatError(
                f"coco evaluator: the model's outputs {sorted(outputs)} hold no detections; "
                "the model must be a Predictor (postprocess) or return 'detections'"
            )
        targets: Sequence[Mapping[str, Any]] = batch.get("target", batch.get("targets"))
        if len(detections) != len(targets):
            raise DataFormatError(
                f"coco evaluator: {len(detections)} detection sets for "
                f"{len(targets)} images in the batch"
            )
        for det, target in zip(detections, targets, strict=True):
            image_id = int(target["image_id"])
            boxes = det["boxes"].detach().to("cpu", torch.float64).numpy().reshape(-1, 4)
            scores = det["scores"].detach().cpu().tolist()
            labels = det["labels"].detach().cpu().tolist()
            rles = self._rles(det) if self.iou_type == "segm" else None
            for i, (box, score, label) in enumerate(zip(boxes, scores, labels, strict=True)):
                x0, y0, x1, y1 = box.tolist()
                result = {
                    "image_id": image_id,
                    "category_id": self._category(int(label)),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
                if rles is not None:
                    result["segmentation"] = rles[i]
                self._detections.append(result)
            if self.ground_truth is None:
                self._add_target(image_id, target)

    @staticmethod
    def _rles(det: Mapping[str, Any]) -> list[dict[str, Any]]:
        masks = det["masks"].detach().cpu()
        binary = (masks > 0.5) if masks.is_floating_point() else masks.bool()
        array = np.asfortranarray(binary.numpy().astype(np.uint8).transpose(1, 2, 0))
        rles = mask_utils.encode(array)
        for rle in rles:
            rle["counts"] = rle["counts"].decode("ascii")
        return list(rles)

    def _add_target(self, image_id: int, target: Mapping[str, Any]) -> None:
        height, width = (int(v) for v in target["orig_size"])
        canvas_h, canvas_w = target["boxes"].canvas_size
        scale = torch.tensor([width / canvas_w, height / canvas_h] * 2, dtype=torch.float64)
        boxes = target["boxes"].as_subclass(torch.Tensor).to("cpu", torch.float64) * scale
        self._images[image_id] = {
            "id": image_id,
            "file_name": f"{image_id}",
            "width": width,
            "height": height,
        }
        crowd = target.get("iscrowd", torch.zeros(len(boxes)))
        area = target.get("area")
        for i, (box, label) in enumerate(
            zip(boxes.tolist(), target["labels"].tolist(), strict=True)
        ):
            x0, y0, x1, y1 = box
            self._gt.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": float(area[i]) if area is not None else (x1 - x0) * (y1 - y0),
                    "iscrowd": int(crowd[i]),
                }
            )

    def _gathered(
        self,
    ) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]], list[dict[str, Any]]]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self._detections, self._images, self._gt
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (self._detections, self._images, self._gt))
        dets = [d for p in parts for d in p[0]]
        images = {k: v for p in parts for k, v in p[1].items()}
        gts = [g for p in parts for g in p[2]]
        return dets, images, gts

    def compute(self) -> dict[str, float]:
        """The 12 COCO metrics, ``AP/<class>`` and F1 figures over everything seen (under
        DDP: over every rank's share, gathered once; each rank returns the same)."""
        detections, images, gts = self._gathered()
        if self.ground_truth is not None:
            gt = self.ground_truth
        else:
            cats = sorted({g["category_id"] for g in gts} | {d["category_id"] for d in detections})
            gt = {
                "images": sorted(images.values(), key=lambda img: img["id"]),
                "annotations": [{**g, "id": i + 1} for i, g in enumerate(gts)],
                "categories": [{"id": c, "name": class_name(self.class_names, c)} for c in cats],
            }
        self.last = evaluate_coco(gt, detections, iou_type=self.iou_type, engine=self.cfg.engine)
        return self.last.flat_metrics()

    def write_report(self, out_dir: str) -> list[str]:
        """metrics.json, per-class and error tables, PR-curve and error PNGs."""
        if self.last is None:
            self.compute()
        assert self.last is not None
        return write_eval_report(self.last, out_dir, plots=self.cfg.plots)


def build_coco_bbox(cfg: CocoEvaluatorConfig) -> CocoEvaluator:
    """Builder of ``coco_bbox``."""
    return CocoEvaluator(cfg, "bbox")


def build_coco_segm(cfg: CocoEvaluatorConfig) -> CocoEvaluator:
    """Builder of ``coco_segm``."""
    return CocoEvaluator(cfg, "segm")
