"""``verify``: find every problem of a COCO dataset (or a YOLO root) and optionally repair it.

Checks: images exist and decode, sizes match the JSON, boxes inside the image and of
positive area, category ids known, ids unique, annotations point at existing images,
``file_name`` relative and inside the root. ``fix_coco`` writes a repaired copy with a JSON
report of every change.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionforge_coco.cocofile import (
    EDGE_TOLERANCE,
    annotation_problems,
    category_problems,
    dataset_paths,
    dumps_coco,
    image_problems,
    read_json,
    safe_relative,
    structure_problems,
)
from visionforge_coco.convert import missing_label_problem, parallel_map
from visionforge_coco.crowd import crowd_path, crowd_problems, read_crowd
from visionforge_coco.decode import decoded_size
from visionforge_coco.problems import DataFormatError, Problem
from visionforge_coco.provenance import record_dataset
from visionforge_coco.staging import StagedDir
from visionforge_coco.yolo import (
    Pair,
    labels_dir_for,
    pair_images_and_labels,
    parse_label_text,
    read_data_yaml,
)


@dataclass
class VerifyReport:
    """Counts and problems of one dataset."""

    dataset: str
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self, first: int = 20) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items())
        lines = [f"{self.dataset}: {counts}"]
        lines += [f"  {p}" for p in self.problems[:first]]
        if len(self.problems) > first:
            lines.append(f"  ... and {len(self.problems) - first} more")
        state = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        lines.append(f"verify: {state}")
        return "\n".join(lines)


def _file_checks(
    images: list[Mapping[str, Any]], root: Path, source: str, progress: bool
) -> dict[int, tuple[Problem, tuple[int, int] | None]]:
    """Per image index: (problem, actual size or None when unusable) for bad files."""

    def check(
        item: tuple[int, Mapping[str, Any]],
    ) -> tuple[int, Problem, tuple[int, int] | None] | None:
        i, img = item
        rel = safe_relative(img.get("file_name"))
        if rel is None or not isinstance(img.get("id"), int):
            return None
        where = f"{source}: image id {img['id']}"
        path = root / rel
        if not path.is_file():
            return i, Problem(where, f"image file {path} not found"), None
        try:
            size = decoded_size(path)
        except DataFormatError as err:
            return i, Problem(where, str(err)), None
        if size != (img.get("width"), img.get("height")):
            message = (
                f"size in JSON {img.get('width')}x{img.get('height')} but the file is "
                f"{size[0]}x{size[1]}"
            )
            return i, Problem(where, message), size
        return None

    results = parallel_map(check, list(enumerate(images)), None, "verify images", progress)
    return {r[0]: (r[1], r[2]) for r in results if r is not None}


def verify_coco(
    annotations: str | os.PathLike[str],
    images_root: str | os.PathLike[str],
    progress: bool = True,
) -> VerifyReport:
    """Every problem of a COCO dataset; unusable files (bad JSON/layout) raise DataFormatError."""
    source = os.fspath(annotations)
    data = read_json(source)
    fatal = structure_problems(data, source)
    if fatal:
        raise DataFormatError(str(fatal[0]))
    report = VerifyReport(
        source, {k: len(data[k]) for k in ("images", "annotations", "categories")}
    )
    report.problems.extend(p for _, p in image_problems(data, source))
    report.problems.extend(category_problems(data, source))
    files = _file_checks(data["images"], Path(images_root), source, progress)
    report.problems.extend(p for p, _ in files.values())
    report.problems.extend(p for _, p in annotation_problems(data, source))
    return report


def verify_yolo(
    root: str | os.PathLike[str], progress: bool = True, strict_labels: bool = False
) -> VerifyReport:
    """Every problem of a YOLO root: label rows, pairing, crowd regions, images that do not
    decode. An image without a label file is a background image (counted), or a problem
    with ``strict_labels``."""
    data = read_data_yaml(root)
    report = VerifyReport(str(data.path))
    counts = dict.fromkeys(
        ("images", "label rows", "crowd regions", "background images", "without a label file"),
        0,
    )
    for split, images_dir in data.splits.items():
        pairing = pair_images_and_labels(images_dir)
        report.problems.extend(
            Problem(str(p), "label file without an image") for p in pairing.orphan_labels
        )
        labels_dir = labels_dir_for(images_dir)
        crowd = read_crowd(labels_dir)
        bad_crowd = crowd_problems(
            crowd, crowd_path(labels_dir), data.num_classes, {p.rel for p in pairing.pairs}
        )
        report.problems.extend(p for rel in sorted(bad_crowd) for p in bad_crowd[rel])

        def check(pair: Pair) -> tuple[int | None, list[Problem]]:
            """(label rows, or None without a label file; problems) of one image."""
            problems = []
            try:
                decoded_size(pair.image)
            except DataFormatError as err:
                problems.append(Problem(pair.image_file, str(err).split(": ", 1)[-1]))
            if pair.label is None:
                if strict_labels:
                    problems.append(missing_label_problem(pair))
                return None, problems
            parsed = parse_label_text(pair.label.read_text(), str(pair.label), data.num_classes)
            return len(parsed.rows), problems + parsed.problems

        results = parallel_map(check, pairing.pairs, None, f"verify {split}", progress)
        counts["images"] += len(pairing.pairs)
        counts["label rows"] += sum(n or 0 for n, _ in results)
        counts["crowd regions"] += sum(len(regions) for regions in crowd.values())
        counts["background images"] += sum(
            1
            for pair, (n, _) in zip(pairing.pairs, results, strict=True)
            if not n and not crowd.get(pair.rel)
        )
        counts["without a label file"] += sum(1 for n, _ in results if n is None)
        report.problems.extend(p for _, problems in results for p in problems)
    report.counts = counts
    return report


def verify_dataset(
    dataset: str | os.PathLike[str], progress: bool = True, strict_labels: bool = False
) -> VerifyReport:
    """Verify a YOLO root (has data.yaml) or a COCO dataset dir / annotations file;
    ``strict_labels`` applies to YOLO roots (see ``verify_yolo``)."""
    path = Path(dataset)
    if path.is_dir() and ((path / "data.yaml").is_file() or (path / "data.yml").is_file()):
        return verify_yolo(path, progress, strict_labels)
    ann, images = dataset_paths(path)
    return verify_coco(ann, images, progress)


# ---------------------------------------------------------------- repair


@dataclass
class FixReport:
    output: str
    changes: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        return f"fixed copy -> {self.output} ({len(self.changes)} change(s), see fix_report.json)"


def fix_coco(
    annotations: str | os.PathLike[str],
    images_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    progress: bool = True,
) -> FixReport:
    """Write a repaired copy of a COCO dataset to ``out`` (``images/``, ``annotations.json``,
    ``fix_report.json``): bad images and annotations dropped, sizes corrected, boxes clipped,
    duplicate annotation ids renumbered. Every change is listed in the report."""
    source = os.fspath(annotations)
    data = read_json(source)
    fatal = structure_problems(data, source)
    if fatal:
        raise DataFormatError(f"{fatal[0]} (cannot be repaired automatically)")
    report = FixReport(os.fspath(out))
    change = report.changes.append
    root = Path(images_root)
    files = _file_checks(data["images"], root, source, progress)
    images: list[dict[str, Any]] = []
    seen_ids: set[int] = set()
    seen_files: set[str] = set()
    for i, img in enumerate(data["images"]):
        where = f"{source}: images[{i}]"
        problem, size = files.get(i, (None, None))
        if not _image_entry_ok(img):
            change(Problem(where, "image entry dropped (invalid id, file_name, width or height)"))
            continue
        if img["id"] in seen_ids:
            change(Problem(where, f"image dropped: duplicate id {img['id']}"))
            continue
        rel = safe_relative(img["file_name"])
        if rel in seen_files:
            change(Problem(where, f"image dropped: file_name {rel!r} already used"))
            continue
        if problem is not None and size is None:
            change(Problem(where, f"image dropped: {problem.message}"))
            continue
        fixed = dict(img)
        if size is not None:
            fixed["width"], fixed["height"] = size
            change(Problem(where, f"size set to {size[0]}x{size[1]} from the file"))
        seen_ids.add(img["id"])
        seen_files.add(str(rel))
        images.append(fixed)
    categories = []
    cat_ids: set[int] = set()
    for i, cat in enumerate(data["categories"]):
        if (
            not isinstance(cat, Mapping)
            or not isinstance(cat.get("id"), int)
            or cat["id"] in cat_ids
            or not isinstance(cat.get("name"), str)
        ):
            change(
                Problem(
                    f"{source}: categories[{i}]",
                    "category dropped (invalid or duplicate id, or no name)",
                )
            )
            continue
        cat_ids.add(cat["id"])
        categories.append(dict(cat))
    by_id = {img["id"]: img for img in images}
    anns = _fixed_annotations(data["annotations"], by_id, cat_ids, source, change)
    with StagedDir(out) as stage:
        for img in images:
            src = root / str(safe_relative(img["file_name"]))
            try:
                stage.place(src, f"images/{safe_relative(img['file_name'])}", "hard")
            except DataFormatError:
                shutil.copy2(src, stage.path(f"images/{safe_relative(img['file_name'])}"))
        fixed = {**data, "images": images, "annotations": anns, "categories": categories}
        stage.write_bytes("annotations.json", dumps_coco(fixed))
        items = [{"where": c.where, "change": c.message} for c in report.changes]
        stage.write_bytes("fix_report.json", dumps_coco({"source": source, "changes": items}))
    record_dataset(
        Path(out) / "annotations.json",
        [source],
        operation="verify --fix",
        changes=len(report.changes),
    )
    return report


def _image_entry_ok(img: object) -> bool:
    return (
        isinstance(img, Mapping)
        and isinstance(img.get("id"), int)
        and safe_relative(img.get("file_name")) is not None
        and all(isinstance(img.get(k), int) and img[k] > 0 for k in ("width", "height"))
    )


def _fixed_annotations(
    annotations: list[Any],
    images: dict[int, dict[str, Any]],
    cat_ids: set[int],
    source: str,
    change: Any,
) -> list[dict[str, Any]]:
    used = {a["id"] for a in annotations if isinstance(a, Mapping) and isinstance(a.get("id"), int)}
    next_id = max(used, default=0) + 1
    seen: set[int] = set()
    out = []
    for i, ann in enumerate(annotations):
        where = f"{source}: annotations[{i}]"
        if not isinstance(ann, Mapping):
            change(Problem(where, "annotation dropped: not an object"))
            continue
        fixed = dict(ann)
        if not isinstance(ann.get("id"), int) or ann["id"] in seen:
            fixed["id"] = next_id
            change(
                Problem(
                    where, f"id {ann.get('id')!r} invalid or duplicate: renumbered to {next_id}"
                )
            )
            next_id += 1
        seen.add(fixed["id"])
        img = images.get(ann.get("image_id"))  # type: ignore[arg-type]
        if img is None:
            change(
                Problem(
                    where,
                    f"annotation dropped: image_id {ann.get('image_id')!r} is not a usable image",
                )
            )
            continue
        if ann.get("category_id") not in cat_ids:
            change(
                Problem(
                    where, f"annotation dropped: unknown category_id {ann.get('category_id')!r}"
                )
            )
            continue
        bbox = ann.get("bbox")
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, int | float) for v in bbox)
        ):
            change(Problem(where, "annotation dropped: bbox is not [x, y, w, h]"))
            continue
        x0, y0 = max(bbox[0], 0.0), max(bbox[1], 0.0)
        x1 = min(bbox[0] + bbox[2], float(img["width"]))
        y1 = min(bbox[1] + bbox[3], float(img["height"]))
        if x1 <= x0 or y1 <= y0:
            change(Problem(where, f"annotation dropped: bbox {bbox} has no area inside the image"))
            continue
        clipped = [x0, y0, x1 - x0, y1 - y0]
        outside = any(abs(a - b) > EDGE_TOLERANCE for a, b in zip(clipped, bbox, strict=True))
        if clipped != bbox and outside:
            fixed["bbox"] = clipped
            if "segmentation" not in ann:
                fixed["area"] = clipped[2] * clipped[3]
            change(Problem(where, f"bbox {bbox} clipped to the image: {clipped}"))
        if ann.get("iscrowd", 0) not in (0, 1):
            fixed["iscrowd"] = 1 if ann["iscrowd"] else 0
            change(Problem(where, f"iscrowd {ann['iscrowd']!r} set to {fixed['iscrowd']}"))
        out.append(fixed)
    return out
