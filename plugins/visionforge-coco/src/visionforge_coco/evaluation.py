"""COCO evaluation (bbox / segm) with faster-coco-eval or pycocotools as the engine.

``evaluate_coco`` returns the 12 standard metrics, per-class AP, and F1 with its precision,
recall and score threshold at the best threshold (IoU 0.5, COCO matching). The raw
precision array and the IoU-0.5 matches are kept for PR curves and error analysis.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from visionforge import storage
from visionforge_coco.cocofile import coco_problems, parse_json
from visionforge_coco.problems import DataFormatError, raise_first

Engine = Literal["faster", "pycocotools"]
IouType = Literal["bbox", "segm"]

METRIC_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip
"""The 12 COCO summary metrics, in pycocotools' ``stats`` order."""


@dataclass
class F1Point:
    """The best F1 over score thresholds and where it is reached."""

    f1: float
    precision: float
    recall: float
    threshold: float


@dataclass
class CocoEvalResult:
    """Everything an evaluation produced."""

    metrics: dict[str, float]
    per_class_ap: dict[str, float]
    f1: F1Point
    category_ids: list[int]
    category_names: list[str]
    precision: np.ndarray
    """COCO precision array [IoU thresholds, 101 recall points, classes, areas, maxDets]."""
    iou_thresholds: np.ndarray
    gt: dict[str, Any]
    dt: list[dict[str, Any]]
    matches: dict[int, int] = field(default_factory=dict)
    """Detection id -> matched ground-truth id at IoU 0.5 (area all, 100 detections);
    detections matching crowd regions are left out (COCO ignores them)."""

    def flat_metrics(self) -> dict[str, float]:
        """The 12 metrics, ``AP/<class>`` per class, and F1 figures, in one dict."""
        out = dict(self.metrics)
        out.update({f"AP/{name}": ap for name, ap in self.per_class_ap.items()})
        out.update(
            {
                "F1": self.f1.f1,
                "F1_precision": self.f1.precision,
                "F1_recall": self.f1.recall,
                "F1_threshold": self.f1.threshold,
            }
        )
        return out


def load_ground_truth(gt: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Ground truth from a path/URL or a dict, checked (first problem raised)."""
    if isinstance(gt, Mapping):
        data: Any = dict(gt)
        source = "ground truth"
    else:
        source = os.fspath(gt)
        data = parse_json(storage.read_bytes(source), source)
    raise_first(coco_problems(data, source), "run `visionforge coco verify` to list all")
    return dict(data)


def load_detections(
    dt: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    gt: Mapping[str, Any],
    iou_type: IouType,
) -> list[dict[str, Any]]:
    """Detections (COCO results format) from a path/URL or a list, checked against ``gt``."""
    if isinstance(dt, str | os.PathLike):
        source = os.fspath(dt)
        data: Any = parse_json(storage.read_bytes(source), source)
    else:
        source, data = "detections", dt
    if not isinstance(data, list):
        raise DataFormatError(f"{source}: detections must be a JSON list of results")
    image_ids = {img["id"] for img in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    need = "bbox" if iou_type == "bbox" else "segmentation"
    # set operations first (fast); the loop below only runs to name the first offender
    well_formed = all(isinstance(d, dict) and need in d and "score" in d for d in data)
    if (
        well_formed
        and {d.get("image_id") for d in data} <= image_ids
        and {d.get("category_id") for d in data} <= cat_ids
    ):
        return data
    for i, det in enumerate(data):
        if not isinstance(det, Mapping) or need not in det or "score" not in det:
            raise DataFormatError(
                f"{source}: result [{i}] needs image_id, category_id, {need} and score"
            )
        if det.get("image_id") not in image_ids:
            raise DataFormatError(
                f"{source}: result [{i}] has image_id {det.get('image_id')!r}, "
                "not in the ground truth"
            )
        if det.get("category_id") not in cat_ids:
            raise DataFormatError(
                f"{source}: result [{i}] has category_id "
                f"{det.get('category_id')!r}, not in the ground truth"
            )
    return data


def _faster(
    gt: dict[str, Any], dt: list[dict[str, Any]], iou_type: IouType
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, int], list[dict[str, Any]]]:
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(gt)
    coco_dt = coco_gt.loadRes(dt)
    ev = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=lambda *_: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    # the "matched" record merges the matchings of every IoU threshold (a detection that
    # loses its ground truth at 0.5 may win it at 0.55): take it from a run at 0.5 only
    at50 = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=lambda *_: None)
    at50.params.iouThrs = np.array([0.5])
    at50.params.areaRng, at50.params.areaRngLbl = [ev.params.areaRng[0]], ["all"]
    at50.params.maxDets = [ev.params.maxDets[-1]]
    at50.evaluate()
    at50.accumulate()
    matches = {}
    for key in at50.eval["matched"]:
        dt_id, gt_id = key.split("_", 1)
        matches[int(dt_id)] = int(gt_id)
    results = list(coco_dt.anns.values())
    return np.asarray(ev.stats[:12]), ev.eval["precision"], ev.params.iouThrs, matches, results


def _pycocotools(
    gt: dict[str, Any], dt: list[dict[str, Any]], iou_type: IouType
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, int], list[dict[str, Any]]]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dt)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    p = ev.params
    matches = {}
    for item in ev.evalImgs:
        if item is None or item["aRng"] != p.areaRng[0] or item["maxDet"] != p.maxDets[-1]:
            continue
        for j, dt_id in enumerate(item["dtIds"]):
            gt_id = int(item["dtMatches"][0][j])
            if gt_id > 0:
                matches[int(dt_id)] = gt_id
    results = list(coco_dt.anns.values())
    return np.asarray(ev.stats[:12]), ev.eval["precision"], p.iouThrs, matches, results


def best_f1(scores: np.ndarray, is_tp: np.ndarray, num_gt: int) -> F1Point:
    """Best F1 over all score thresholds (detections kept when score >= threshold)."""
    if num_gt == 0 or scores.size == 0:
        return F1Point(0.0, 0.0, 0.0, 0.0)
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(is_tp[order])
    kept = np.arange(1, scores.size + 1)
    # a threshold can only sit after the last detection of a score tie
    last_of_tie = np.r_[scores[order][1:] != scores[order][:-1], True]
    precision, recall = tp / kept, tp / num_gt
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    f1 = np.where(last_of_tie, f1, -1.0)
    best = int(np.argmax(f1))
    return F1Point(
        float(f1[best]), float(precision[best]), float(recall[best]), float(scores[order][best])
    )


def evaluate_coco(
    gt: str | os.PathLike[str] | Mapping[str, Any],
    dt: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    *,
    iou_type: IouType = "bbox",
    engine: Engine = "faster",
) -> CocoEvalResult:
    """Evaluate detections against COCO ground truth; files may be paths or fsspec URLs."""
    gt_data = load_ground_truth(gt)
    dt_data = load_detections(dt, gt_data, iou_type)
    cat_ids = sorted(c["id"] for c in gt_data["categories"])
    names = {c["id"]: c["name"] for c in gt_data["categories"]}
    num_gt = sum(1 for a in gt_data["annotations"] if not a.get("iscrowd", 0))
    if not dt_data:
        zeros = {name: 0.0 for name in METRIC_NAMES}
        empty = np.zeros((10, 101, len(cat_ids), 4, 3))
        return CocoEvalResult(
            zeros,
            {names[c]: 0.0 for c in cat_ids},
            F1Point(0, 0, 0, 0),
            cat_ids,
            [names[c] for c in cat_ids],
            empty,
            np.linspace(0.5, 0.95, 10),
            gt_data,
            [],
        )
    run = _faster if engine == "faster" else _pycocotools
    stats, precision, iou_thrs, matches, results = run(gt_data, dt_data, iou_type)
    metrics = {name: float(v) for name, v in zip(METRIC_NAMES, stats, strict=True)}
    per_class = {}
    for k, cat in enumerate(cat_ids):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_class[names[cat]] = float(values.mean()) if values.size else -1.0
    crowd = {a["id"] for a in gt_data["annotations"] if a.get("iscrowd", 0)}
    ignored = {d for d, g in matches.items() if g in crowd}  # matched a crowd region
    matches = {d: g for d, g in matches.items() if g not in crowd}
    kept = [r for r in results if r["id"] not in ignored] if ignored else results
    scores = np.fromiter((r["score"] for r in kept), dtype=np.float64, count=len(kept))
    is_tp = np.fromiter((r["id"] in matches for r in kept), dtype=bool, count=len(kept))
    f1 = best_f1(scores, is_tp, num_gt)
    return CocoEvalResult(
        metrics=metrics,
        per_class_ap=per_class,
        f1=f1,
        category_ids=cat_ids,
        category_names=[names[c] for c in cat_ids],
        precision=precision,
        iou_thresholds=np.asarray(iou_thrs),
        gt=gt_data,
        dt=results,
        matches=matches,
    )
