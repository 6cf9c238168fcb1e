"""``crowd.json``: the crowd regions of a YOLO split, which label rows cannot hold.

It lies beside the label files (``labels/<split>/crowd.json``) and maps an image's path
(relative to ``images/<split>``) to its crowd regions. Each region names its class the way
the label rows do, ``"class"``: the 0-based index into ``data.yaml``'s names, never a
source COCO category id (those may have gaps, so they need not match the classes). The
other fields are the COCO annotation's: ``bbox`` (pixels), ``area``, ``segmentation``
(polygons or RLE) and any extra keys.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from visionforge_coco.cocofile import read_json, valid_segmentation
from visionforge_coco.problems import DataFormatError, Problem

CROWD_FILE = "crowd.json"
CLASS_KEY = "class"
_ANNOTATION_KEYS = ("id", "image_id", "iscrowd", "category_id", CLASS_KEY)
"""Fields a region does not carry over as they are: ids and class are given anew."""

CrowdRegions = dict[str, list[dict[str, Any]]]


def crowd_path(labels_dir: Path) -> Path:
    return labels_dir / CROWD_FILE


def read_crowd(labels_dir: Path) -> CrowdRegions:
    """The crowd regions of a split by image path ({} without a crowd file); only the
    layout is checked here, ``crowd_problems`` checks each region."""
    path = crowd_path(labels_dir)
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DataFormatError(f"{path}: expected {{image path: [crowd regions]}}")
    return data


def crowd_problems(
    crowd: Mapping[str, list[Any]], path: Path, num_classes: int, images: Collection[str]
) -> dict[str, list[Problem]]:
    """Problems by image path: regions of images that do not exist, without a valid
    ``class`` (0..num_classes-1), ``bbox`` or ``segmentation``."""
    found: dict[str, list[Problem]] = {}
    for rel, regions in crowd.items():
        problems = found.setdefault(rel, [])
        if rel not in images:
            problems.append(Problem(str(path), f"crowd regions for {rel!r}, which has no image"))
            continue
        for k, region in enumerate(regions):
            message = _region_problem(region, num_classes)
            if message is not None:
                problems.append(Problem(f"{path}: {rel!r} crowd region {k}", message))
    return {rel: problems for rel, problems in found.items() if problems}


def _region_problem(region: object, num_classes: int) -> str | None:
    if not isinstance(region, dict):
        return "a crowd region must be an object"
    cls = region.get(CLASS_KEY)
    if cls is None and "category_id" in region:
        return (
            f"has 'category_id' {region['category_id']!r} but no '{CLASS_KEY}': an older "
            "coco2yolo wrote source category ids, which need not match data.yaml's "
            "classes; convert the COCO source again"
        )
    if type(cls) is not int or not 0 <= cls < num_classes:
        return f"'{CLASS_KEY}' {cls!r} is not in 0..{num_classes - 1} (names in data.yaml)"
    bbox = region.get("bbox")
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(type(v) in (int, float) and math.isfinite(v) for v in bbox)
    ):
        return "'bbox' must be [x, y, width, height] numbers"
    if bbox[2] <= 0 or bbox[3] <= 0:
        return f"bbox {bbox} has zero or negative width/height"
    seg = region.get("segmentation")
    if seg is not None and not valid_segmentation(seg):
        return "'segmentation' must be polygons [[x, y, ...]] or an RLE {size, counts}"
    return None


def region_from_annotation(ann: Mapping[str, Any], class_id: int) -> dict[str, Any]:
    """The crowd region of a COCO crowd annotation whose category is YOLO class ``class_id``."""
    return {CLASS_KEY: class_id, **{k: v for k, v in ann.items() if k not in _ANNOTATION_KEYS}}


def annotation_from_region(region: Mapping[str, Any], ann_id: int, image_id: int) -> dict[str, Any]:
    """The COCO crowd annotation of a (checked) region: category id is class + 1, as for
    the label rows."""
    fields = {k: v for k, v in region.items() if k not in _ANNOTATION_KEYS}
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": region[CLASS_KEY] + 1,
        **fields,
        "iscrowd": 1,
    }
