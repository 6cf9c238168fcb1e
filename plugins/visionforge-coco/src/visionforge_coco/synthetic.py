"""Deterministic generated detection data: rectangles, ellipses and triangles of K classes.

Image ``i`` depends only on ``(seed, i)``, so a dataset is reproducible on every machine and
can be generated lazily. Objects vary in size (log-uniform), aspect and colour, and may
partly occlude each other (bounded by ``max_overlap``). Shapes are rasterized from their
polygons with pycocotools, so boxes, polygons and masks agree exactly.
"""

from __future__ import annotations

import colorsys
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from visionforge_coco.cocofile import dumps_coco
from visionforge_coco.convert import parallel_map
from visionforge_coco.staging import StagedDir
from visionforge_coco.yolo import format_row

SHAPES = ("rectangle", "ellipse", "triangle")


@dataclass(frozen=True)
class ShapesSpec:
    """Parameters of a synthetic shapes dataset."""

    num_images: int = 64
    image_size: int = 128
    num_classes: int = 3
    min_objects: int = 1
    max_objects: int = 6
    min_size: float = 0.08
    max_size: float = 0.5
    max_overlap: float = 0.4
    seed: int = 0

    def class_names(self) -> list[str]:
        if self.num_classes <= len(SHAPES):
            return list(SHAPES[: self.num_classes])
        return [f"{SHAPES[k % 3]}_{k}" for k in range(self.num_classes)]


@dataclass(frozen=True)
class ShapeObject:
    """One drawn object: class, polygon (pixels, x y pairs) and box (x, y, w, h)."""

    label: int
    polygon: tuple[float, ...]
    bbox: tuple[float, float, float, float]


def _colour(label: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    hue = (label / num_classes + rng.uniform(-0.03, 0.03)) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    return np.array([round(c * 255) for c in rgb], dtype=np.uint8)


def _polygon(
    kind: str, x: float, y: float, w: float, h: float, rng: np.random.Generator
) -> list[float]:
    if kind == "rectangle":
        return [x, y, x + w, y, x + w, y + h, x, y + h]
    if kind == "triangle":
        apex = x + w * rng.uniform(0.2, 0.8)
        if rng.uniform() < 0.5:
            return [apex, y, x + w, y + h, x, y + h]
        return [x, y, x + w, y, apex, y + h]
    cx, cy = x + w / 2, y + h / 2
    angles = np.linspace(0, 2 * math.pi, 32, endpoint=False)
    pts = np.stack([cx + w / 2 * np.cos(angles), cy + h / 2 * np.sin(angles)], axis=1)
    return [float(v) for v in pts.ravel()]


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def generate(spec: ShapesSpec, index: int) -> tuple[np.ndarray, list[ShapeObject]]:
    """Image ``index`` (HWC uint8) and its objects, drawn back to front."""
    rng = np.random.default_rng([spec.seed, index])
    size = spec.image_size
    c0, c1 = rng.integers(0, 256, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    image = (c0 * (1 - ramp) + c1 * ramp).repeat(size, axis=1)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    objects: list[ShapeObject] = []
    wanted = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    for _ in range(wanted * 20):
        if len(objects) == wanted:
            break
        label = int(rng.integers(spec.num_classes))
        side = math.exp(rng.uniform(math.log(spec.min_size), math.log(spec.max_size))) * size
        aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        w = min(side * math.sqrt(aspect), size - 1.0)
        h = min(side / math.sqrt(aspect), size - 1.0)
        x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
        poly = _polygon(SHAPES[label % 3], x, y, w, h, rng)
        xs, ys = poly[0::2], poly[1::2]
        bbox = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
        if any(_iou(bbox, o.bbox) > spec.max_overlap for o in objects):
            continue
        mask = mask_utils.decode(mask_utils.frPyObjects([poly], size, size))[:, :, 0]
        image[mask.astype(bool)] = _colour(label, spec.num_classes, rng)
        objects.append(ShapeObject(label, tuple(poly), bbox))
    return image, objects


def polygon_area(polygon: tuple[float, ...], height: int, width: int) -> float:
    """Pixel area of a polygon as COCO counts it (rasterized)."""
    return float(mask_utils.area(mask_utils.frPyObjects([list(polygon)], height, width))[0])


def write_synthetic(
    out: str | os.PathLike[str],
    spec: ShapesSpec,
    fmt: Literal["coco", "yolo"] = "coco",
    *,
    split: str = "train",
    image_format: Literal["png", "jpg"] = "png",
    rows: Literal["box", "polygon"] = "box",
    progress: bool = True,
) -> Path:
    """Write ``spec`` to ``out`` as COCO (``images/`` + ``annotations.json``) or as a YOLO root
    (``images/<split>``, ``labels/<split>``, ``data.yaml``). Returns ``out``."""
    names = spec.class_names()
    size = spec.image_size

    def work(index: int) -> list[dict[str, Any]]:
        image, objects = generate(spec, index)
        name = f"{index:06d}.{image_format}"
        image_rel = f"images/{name}" if fmt == "coco" else f"images/{split}/{name}"
        Image.fromarray(image).save(stage.path(image_rel), quality=90)
        if fmt == "yolo":
            lines = []
            for obj in objects:
                x, y, w, h = obj.bbox
                coords = (
                    [(x + w / 2) / size, (y + h / 2) / size, w / size, h / size]
                    if rows == "box"
                    else [v / size for v in obj.polygon]
                )
                lines.append(format_row(obj.label, coords) + "\n")
            stage.path(f"labels/{split}/{index:06d}.txt").write_text("".join(lines))
        return [
            {
                "image_id": index + 1,
                "category_id": obj.label + 1,
                "bbox": list(obj.bbox),
                "area": polygon_area(obj.polygon, size, size),
                "segmentation": [list(obj.polygon)],
                "iscrowd": 0,
            }
            for obj in objects
        ]

    with StagedDir(out) as stage:
        per_image = parallel_map(
            work, list(range(spec.num_images)), None, "synthetic shapes", progress
        )
        if fmt == "coco":
            annotations = [
                {"id": i + 1, **ann} for i, ann in enumerate(a for anns in per_image for a in anns)
            ]
            coco = {
                "images": [
                    {
                        "id": i + 1,
                        "file_name": f"{i:06d}.{image_format}",
                        "width": size,
                        "height": size,
                    }
                    for i in range(spec.num_images)
                ],
                "annotations": annotations,
                "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)],
            }
            stage.write_bytes("annotations.json", dumps_coco(coco))
        else:
            listing = "\n".join(f"  - {n}" for n in names)
            text = f"path: .\n{split}: images/{split}\nnc: {len(names)}\nnames:\n{listing}\n"
            stage.write_bytes("data.yaml", text.encode())
    return Path(out)
