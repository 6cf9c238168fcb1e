"""Benchmark: COCO bbox evaluation, ours vs pycocotools vs faster-coco-eval alone, same run.

    python benchmarks/coco_eval.py --images 5000 --dets 100 --classes 80

Writes generated ground truth and detections JSON files (not timed), then times, from the
files: pycocotools (load, evaluate, accumulate, summarize), faster-coco-eval alone (same
steps) and ``visionforge_coco.evaluation.evaluate_coco`` (load + checks, metrics, per-class
AP, F1; plots off). Prints a table and the largest metric difference to pycocotools.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from visionforge_coco.evaluation import METRIC_NAMES, evaluate_coco


def generate(images: int, dets: int, classes: int, seed: int = 0) -> tuple[dict, list]:
    rng = np.random.default_rng(seed)
    gt: dict = {
        "images": [],
        "annotations": [],
        "categories": [{"id": c + 1, "name": f"class{c}"} for c in range(classes)],
    }
    results: list = []
    for image_id in range(1, images + 1):
        gt["images"].append(
            {"id": image_id, "file_name": f"{image_id}.jpg", "width": 640, "height": 480}
        )
        n_gt = int(rng.integers(1, 15))
        wh = rng.uniform(8, 300, (n_gt, 2))
        xy = rng.uniform(0, 1, (n_gt, 2)) * (np.array([640, 480]) - wh)
        cats = rng.integers(1, classes + 1, n_gt)
        for (x, y), (w, h), c in zip(xy, wh, cats, strict=True):
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": int(c),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        pick = rng.integers(0, n_gt, dets)
        noise = rng.normal(0, 0.15, (dets, 4)) * np.repeat(wh[pick], 2, axis=1)
        boxes = np.concatenate([xy[pick], wh[pick]], axis=1) + noise
        boxes[:, 2:] = np.abs(boxes[:, 2:]) + 1
        det_cats = np.where(
            rng.uniform(size=dets) < 0.7, cats[pick], rng.integers(1, classes + 1, dets)
        )
        scores = rng.uniform(size=dets)
        for box, c, s in zip(boxes.tolist(), det_cats.tolist(), scores.tolist(), strict=True):
            results.append({"image_id": image_id, "category_id": c, "bbox": box, "score": s})
    return gt, results


def run_pycocotools(gt_path: Path, dt_path: Path) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(dt_path)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats[:12])


def run_faster(gt_path: Path, dt_path: Path) -> list[float]:
    from faster_coco_eval import COCO, COCOeval_faster

    gt = COCO(str(gt_path))
    ev = COCOeval_faster(gt, gt.loadRes(str(dt_path)), "bbox", print_function=lambda *_: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return list(ev.stats[:12])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--skip-pycocotools", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gt, dets = generate(args.images, args.dets, args.classes)
        gt_path, dt_path = Path(tmp) / "gt.json", Path(tmp) / "dt.json"
        gt_path.write_text(json.dumps(gt))
        dt_path.write_text(json.dumps(dets))
        del gt, dets
        rows = []
        reference = None
        if not args.skip_pycocotools:
            t = time.perf_counter()
            reference = run_pycocotools(gt_path, dt_path)
            rows.append(("pycocotools", time.perf_counter() - t))
        t = time.perf_counter()
        faster = run_faster(gt_path, dt_path)
        faster_s = time.perf_counter() - t
        rows.append(("faster-coco-eval alone", faster_s))
        t = time.perf_counter()
        ours = evaluate_coco(gt_path, dt_path)
        ours.flat_metrics()
        ours_s = time.perf_counter() - t
        rows.append(("visionforge evaluate_coco (+per-class, F1)", ours_s))
    print(f"\n{args.images} images x {args.dets} detections x {args.classes} classes")
    print(f"{'method':<44} {'seconds':>8} {'vs faster':>9}")
    for name, seconds in rows:
        print(f"{name:<44} {seconds:8.2f} {seconds / faster_s:9.3f}")
    ours_stats = [ours.metrics[n] for n in METRIC_NAMES]
    to_faster = max(abs(a - b) for a, b in zip(ours_stats, faster, strict=True))
    print(f"max |ours - faster-coco-eval| = {to_faster:.2e}")
    if reference is not None:
        diff = max(abs(a - b) for a, b in zip(ours_stats, reference, strict=True))
        print(f"max |ours - pycocotools|      = {diff:.2e}")
    print(f"AP {ours.metrics['AP']:.4f}  AP50 {ours.metrics['AP50']:.4f}  F1 {ours.f1.f1:.4f}")


if __name__ == "__main__":
    main()
