"""Reading and checking COCO annotation files (torch-free).

``coco_problems`` finds every structural problem of a COCO dict; ``load_coco`` reads a
file (local or fsspec URL) and raises on the first problem, naming the file and the
annotation/image id.
"""

from __future__ import annotations

import math
import os
import posixpath
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from visionforge import storage
from visionforge_coco.problems import DataFormatError, Problem, raise_first

EDGE_TOLERANCE = 1.0
"""Pixels a box may reach outside its image before ``verify`` reports it."""


def parse_json(data: bytes, source: str) -> Any:
    """Parse JSON (orjson) with errors naming ``source:line:column``."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:
        hint = " (file truncated?)" if err.pos >= len(data.rstrip()) else ""
        raise DataFormatError(
            f"{source}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}{hint}"
        ) from None


def read_json(path: str | os.PathLike[str]) -> Any:
    source = os.fspath(path)
    return parse_json(storage.read_bytes(source), source)


def safe_relative(file_name: object) -> str | None:
    """The normalized relative path, or None when absolute or escaping its root with ``..``."""
    if not isinstance(file_name, str) or not file_name:
        return None
    if file_name.startswith(("/", "\\")) or (len(file_name) > 1 and file_name[1] == ":"):
        return None
    norm = posixpath.normpath(file_name.replace("\\", "/"))
    if norm == ".." or norm.startswith("../") or norm == ".":
        return None
    return norm


def _number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def _id(value: object) -> bool:
    return type(value) is int


def structure_problems(data: object, source: str) -> list[Problem]:
    """Problems that make the file unusable (top-level layout)."""
    if not isinstance(data, Mapping):
        return [Problem(source, "top level must be an object with images/annotations/categories")]
    problems = []
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            problems.append(Problem(source, f"'{key}' must be a list (missing or wrong type)"))
    return problems


def image_problems(data: Mapping[str, Any], source: str) -> Iterator[tuple[int, Problem]]:
    """(index in ``images``, problem) for each bad image entry."""
    seen: set[int] = set()
    files: dict[str, int] = {}
    for i, img in enumerate(data["images"]):
        where = f"{source}: images[{i}]"
        if not isinstance(img, dict) or not _id(img.get("id")):
            yield i, Problem(where, "an image needs an integer 'id'")
            continue
        where = f"{source}: image id {img['id']}"
        if img["id"] in seen:
            yield i, Problem(where, "duplicate image id")
        seen.add(img["id"])
        rel = safe_relative(img.get("file_name"))
        if rel is None:
            yield (
                i,
                Problem(
                    where,
                    f"file_name {img.get('file_name')!r} must be a relative path inside the "
                    "images root (no leading '/', no '..')",
                ),
            )
        elif rel in files:
            yield i, Problem(where, f"file_name {rel!r} is also used by image id {files[rel]}")
        else:
            files[rel] = img["id"]
        for key in ("width", "height"):
            if not _id(img.get(key)) or img[key] <= 0:
                yield i, Problem(where, f"'{key}' must be a positive integer")


def category_problems(data: Mapping[str, Any], source: str) -> Iterator[Problem]:
    seen: set[int] = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _id(cat.get("id")):
            yield Problem(f"{source}: categories[{i}]", "a category needs an integer 'id'")
            continue
        if cat["id"] in seen:
            yield Problem(f"{source}: category id {cat['id']}", "duplicate category id")
        seen.add(cat["id"])
        if not isinstance(cat.get("name"), str):
            yield Problem(f"{source}: category id {cat['id']}", "a category needs a 'name'")


def annotation_problems(
    data: Mapping[str, Any], source: str, edge_tolerance: float = EDGE_TOLERANCE
) -> Iterator[tuple[int, Problem]]:
    """(index in ``annotations``, problem) for each bad annotation."""
    images = {img["id"]: img for img in data["images"] if isinstance(img, dict)}
    categories = {c["id"] for c in data["categories"] if isinstance(c, dict)}
    seen: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not _id(ann.get("id")):
            yield i, Problem(f"{source}: annotations[{i}]", "an annotation needs an integer 'id'")
            continue
        where = f"{source}: annotation id {ann['id']}"
        if ann["id"] in seen:
            yield i, Problem(where, "duplicate annotation id")
        seen.add(ann["id"])
        img = images.get(ann.get("image_id"))
        if img is None:
            yield i, Problem(where, f"image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") not in categories:
            yield (
                i,
                Problem(where, f"category_id {ann.get('category_id')!r} is not in 'categories'"),
            )
        if ann.get("iscrowd", 0) not in (0, 1):
            yield i, Problem(where, "'iscrowd' must be 0 or 1")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
            yield i, Problem(where, "'bbox' must be [x, y, width, height] numbers")
            continue
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            yield i, Problem(where, f"bbox {bbox} has zero or negative width/height")
        elif img is not None and _id(img.get("width")) and _id(img.get("height")):
            t = edge_tolerance
            if x < -t or y < -t or x + w > img["width"] + t or y + h > img["height"] + t:
                yield (
                    i,
                    Problem(
                        where,
                        f"bbox {bbox} reaches outside the {img['width']}x{img['height']} image",
                    ),
                )
        seg = ann.get("segmentation")
        if seg is not None and not valid_segmentation(seg):
            yield (
                i,
                Problem(
                    where, "'segmentation' must be polygons [[x, y, ...]] or an RLE {size, counts}"
                ),
            )


def valid_segmentation(seg: object) -> bool:
    """Polygons ``[[x, y, ...], ...]`` (3+ points each) or an RLE ``{size, counts}``."""
    if isinstance(seg, list):
        return all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(_number(v) for v in p)
            for p in seg
        )
    if isinstance(seg, dict):
        return "counts" in seg and isinstance(seg.get("size"), list) and len(seg["size"]) == 2
    return False


def coco_problems(data: object, source: str) -> list[Problem]:
    """Every structural problem of a COCO dict (files on disk are not checked)."""
    problems = structure_problems(data, source)
    if problems:
        return problems
    assert isinstance(data, Mapping)
    problems.extend(p for _, p in image_problems(data, source))
    problems.extend(category_problems(data, source))
    problems.extend(p for _, p in annotation_problems(data, source))
    return problems


def load_coco(path: str | os.PathLike[str], *, check: bool = True) -> dict[str, Any]:
    """Read a COCO annotation file; with ``check`` raise DataFormatError on its first problem."""
    source = os.fspath(path)
    data = read_json(source)
    if check:
        raise_first(coco_problems(data, source), "run `visionforge coco verify` for all problems")
    return dict(data)


def contiguous_categories(data: Mapping[str, Any]) -> tuple[list[int], list[str]]:
    """Category ids sorted ascending (label ``i`` is ``ids[i]``) and their names."""
    cats = sorted(data["categories"], key=lambda c: c["id"])
    return [c["id"] for c in cats], [c["name"] for c in cats]


def dataset_paths(dataset: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(annotations JSON, images root) of a COCO dataset dir (``annotations.json`` + ``images/``)
    or of an annotations file whose images are in ``images/`` beside it."""
    path = Path(dataset)
    if path.is_dir():
        ann = path / "annotations.json"
        if not ann.is_file():
            raise DataFormatError(f"{path}: no annotations.json in this directory")
        return ann, path / "images"
    if path.is_file():
        return path, path.parent / "images"
    raise DataFormatError(f"{path}: no such dataset directory or annotations file")


def dumps_coco(data: Mapping[str, Any]) -> bytes:
    """Compact, deterministic JSON bytes of a COCO dict (floats round-trip exactly)."""
    return orjson.dumps(data)
