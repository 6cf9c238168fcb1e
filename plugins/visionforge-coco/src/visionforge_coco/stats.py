"""``stats``: class counts, boxes per image and box sizes of a COCO dataset (PNG + JSON)."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionforge_coco.analysis import FN_SIZES, size_bucket
from visionforge_coco.cocofile import contiguous_categories, dataset_paths, load_coco


@dataclass
class DatasetStats:
    """``summary`` is what stats.json holds; the raw lists feed the histograms."""

    summary: dict[str, Any]
    boxes_per_image: list[int]
    box_sides: list[float]


def dataset_stats(data: dict[str, Any]) -> DatasetStats:
    """Statistics of a COCO dict."""
    ids, names = contiguous_categories(data)
    name_of = dict(zip(ids, names, strict=True))
    per_class = Counter(name_of[a["category_id"]] for a in data["annotations"])
    per_image = Counter(a["image_id"] for a in data["annotations"])
    boxes_per_image = [per_image.get(img["id"], 0) for img in data["images"]]
    sides = [math.sqrt(a["bbox"][2] * a["bbox"][3]) for a in data["annotations"]]
    buckets = Counter(
        size_bucket(a.get("area", a["bbox"][2] * a["bbox"][3])) for a in data["annotations"]
    )
    hist, edges = np.histogram(sides, bins=20) if sides else (np.zeros(0), np.zeros(0))
    summary = {
        "images": len(data["images"]),
        "annotations": len(data["annotations"]),
        "background_images": sum(1 for n in boxes_per_image if n == 0),
        "crowd_annotations": sum(1 for a in data["annotations"] if a.get("iscrowd", 0)),
        "class_counts": {name: per_class.get(name, 0) for name in names},
        "boxes_per_image": {
            "mean": float(np.mean(boxes_per_image)) if boxes_per_image else 0.0,
            "max": max(boxes_per_image, default=0),
            "histogram": dict(sorted(Counter(boxes_per_image).items())),
        },
        "size_buckets": {k: buckets.get(k, 0) for k in FN_SIZES},
        "box_side_histogram": {"edges": edges.tolist(), "counts": hist.astype(int).tolist()},
    }
    return DatasetStats(summary, boxes_per_image, sides)


def write_stats(dataset: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[str]:
    """Write ``stats.json`` and ``stats.png`` for a COCO dataset dir or annotations file."""
    from visionforge_coco.plots import plot_stats

    ann, _ = dataset_paths(dataset)
    stats = dataset_stats(load_coco(ann))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "stats.json"
    json_path.write_text(json.dumps(stats.summary, indent=2) + "\n")
    png = plot_stats(
        stats.summary["class_counts"], stats.boxes_per_image, stats.box_sides, out / "stats.png"
    )
    return [str(json_path), png]
