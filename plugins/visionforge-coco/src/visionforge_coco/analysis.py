"""False-positive / false-negative analysis at the best-F1 operating point.

Detections with a score at or above the F1 threshold are the operating point. A false
positive is a *duplicate* (IoU >= 0.5 with a ground truth of its class that another
detection matched), *class confusion* (IoU >= 0.5 with a ground truth of another class),
*localization* (0.1 <= IoU < 0.5 with its class) or *background*; checked in that order.
A false negative is a ground truth no kept detection matched, split by COCO size bucket.
IoUs are box IoUs (pycocotools.mask.iou) for both bbox and segm evaluation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from visionforge_coco.evaluation import CocoEvalResult

FP_TYPES = ("duplicate", "class_confusion", "localization", "background")
FN_SIZES = ("small", "medium", "large")
MATCH_IOU = 0.5
LOC_IOU = 0.1


@dataclass
class ErrorAnalysis:
    threshold: float
    true_positives: int = 0
    false_positives: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FP_TYPES, 0))
    false_negatives: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FN_SIZES, 0))

    def rows(self) -> list[tuple[str, str, int]]:
        """(kind, type, count) table rows."""
        rows = [("TP", "all", self.true_positives)]
        rows += [("FP", k, v) for k, v in self.false_positives.items()]
        rows += [("FN", k, v) for k, v in self.false_negatives.items()]
        return rows


def size_bucket(area: float) -> str:
    """COCO size bucket of an area in pixels."""
    if area < 32**2:
        return "small"
    return "medium" if area < 96**2 else "large"


def analyze_errors(result: CocoEvalResult) -> ErrorAnalysis:
    """Classify errors of ``result`` at its best-F1 score threshold."""
    threshold = result.f1.threshold
    out = ErrorAnalysis(threshold=threshold)
    gts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in result.gt["annotations"]:
        if not ann.get("iscrowd", 0):
            gts[ann["image_id"]].append(ann)
    dts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for det in result.dt:
        if det["score"] >= threshold:
            dts[det["image_id"]].append(det)
    matched_gt: set[int] = set()
    for image_id, dets in dts.items():
        image_gts = gts.get(image_id, [])
        ious = _box_ious(dets, image_gts)
        gt_cats = np.array([g["category_id"] for g in image_gts])
        for i, det in enumerate(dets):
            gt_id = result.matches.get(det["id"])
            if gt_id is not None:
                out.true_positives += 1
                matched_gt.add(gt_id)
                continue
            same = gt_cats == det["category_id"]
            row = ious[i] if image_gts else np.zeros(0)
            best_same = float(row[same].max()) if same.any() else 0.0
            best_other = float(row[~same].max()) if (~same).any() else 0.0
            if best_same >= MATCH_IOU:
                kind = "duplicate"
            elif best_other >= MATCH_IOU:
                kind = "class_confusion"
            elif best_same >= LOC_IOU:
                kind = "localization"
            else:
                kind = "background"
            out.false_positives[kind] += 1
    for anns in gts.values():
        for ann in anns:
            if ann["id"] not in matched_gt:
                out.false_negatives[size_bucket(ann["area"])] += 1
    return out


def _box_ious(dets: list[dict[str, Any]], gts: list[dict[str, Any]]) -> np.ndarray:
    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    d = np.array([det["bbox"] for det in dets], dtype=np.float64)
    g = np.array([gt["bbox"] for gt in gts], dtype=np.float64)
    return np.asarray(mask_utils.iou(d, g, np.zeros(len(gts), dtype=np.uint8)))
