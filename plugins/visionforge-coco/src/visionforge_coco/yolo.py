"""The Ultralytics YOLO layout: ``data.yaml``, ``images/<split>`` beside ``labels/<split>``.

A label row is ``class cx cy w h`` (a box) or ``class x1 y1 x2 y2 ...`` (a polygon of at
least three points), coordinates normalized to [0, 1]; one file may hold both kinds.
Coordinates slightly outside (within ``tolerance``) are clipped and counted; further out
the row is rejected.
"""

from __future__ import annotations

import math
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import yaml

from visionforge_coco.imageinfo import is_image_file
from visionforge_coco.problems import DataFormatError, Problem

SPLITS = ("train", "val", "test")
RowKind = Literal["box", "polygon"]


@dataclass(frozen=True)
class DataYaml:
    """A parsed ``data.yaml``: dataset root, split image dirs and class names."""

    path: Path
    root: Path
    splits: dict[str, Path]
    names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.names)


def _names_list(raw: object, path: Path) -> list[str]:
    if isinstance(raw, list) and all(isinstance(n, str | int) for n in raw):
        return [str(n) for n in raw]
    if isinstance(raw, dict):
        try:
            keys = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise DataFormatError(f"{path}: 'names' keys must be class ids 0..nc-1") from None
        if keys != list(range(len(keys))):
            raise DataFormatError(f"{path}: 'names' ids must be 0..{len(keys) - 1}, got {keys}")
        by_id = {int(k): str(v) for k, v in raw.items()}
        return [by_id[i] for i in keys]
    raise DataFormatError(f"{path}: 'names' must be a list or a {{id: name}} mapping")


def read_data_yaml(root_or_file: str | os.PathLike[str]) -> DataYaml:
    """Read ``data.yaml`` (given the file or the dataset root holding it)."""
    path = Path(root_or_file)
    if path.is_dir():
        candidates = [path / "data.yaml", path / "data.yml"]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise DataFormatError(f"{path}: no data.yaml found; a YOLO root needs one")
        path = found[0]
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise DataFormatError(f"{path}{line}: invalid YAML: {err}") from None
    if not isinstance(data, dict) or "names" not in data:
        raise DataFormatError(f"{path}: expected a mapping with 'names' and split entries")
    names = _names_list(data["names"], path)
    if "nc" in data and data["nc"] != len(names):
        raise DataFormatError(f"{path}: nc={data['nc']} but {len(names)} names are listed")
    base = Path(data.get("path") or ".")
    root = base if base.is_absolute() else (path.parent / base)
    splits: dict[str, Path] = {}
    for split in SPLITS:
        entry = data.get(split)
        if entry is None:
            continue
        if not isinstance(entry, str):
            raise DataFormatError(f"{path}: '{split}' must be one images directory (a string)")
        split_dir = Path(entry) if Path(entry).is_absolute() else root / entry
        if not split_dir.is_dir():
            raise DataFormatError(f"{path}: '{split}: {entry}' is not a directory ({split_dir})")
        splits[split] = split_dir
    if not splits:
        raise DataFormatError(f"{path}: no train/val/test entry names an images directory")
    return DataYaml(path=path, root=root, splits=splits, names=names)


def labels_dir_for(images_dir: Path) -> Path:
    """Ultralytics rule: the last ``images`` path component becomes ``labels``."""
    parts = list(images_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    raise DataFormatError(f"{images_dir}: a YOLO images directory must have 'images' in its path")


@dataclass(frozen=True)
class Pair:
    """An image and its label file (``label_file`` is None when there is none); the paths
    are strings, since building thousands of ``Path`` objects costs more than the work."""

    image_file: str
    label_file: str | None
    rel: str

    @property
    def image(self) -> Path:
        return Path(self.image_file)

    @property
    def label(self) -> Path | None:
        return None if self.label_file is None else Path(self.label_file)


@dataclass
class Pairing:
    pairs: list[Pair]
    orphan_labels: list[Path] = field(default_factory=list)


def _walk_relative(root: Path) -> list[tuple[str, str]]:
    """(relative posix path, file name) of every file below ``root``."""
    found: list[tuple[str, str]] = []
    base = os.fspath(root)
    for dirpath, _, files in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base).replace(os.sep, "/")
        prefix = "" if rel_dir == "." else rel_dir + "/"
        found.extend((prefix + name, name) for name in files)
    return found


def _dir_prefix(directory: Path) -> str:
    """``directory`` as a string ending in one separator: prefix + relative path is what
    ``os.path.join`` gives, for a fraction of its cost."""
    return os.path.join(directory, "")


def pair_images_and_labels(images_dir: Path) -> Pairing:
    """Match images to label files by relative path without extension (never fuzzily).

    Two images with the same stem in one folder (``a.jpg``, ``a.png``) are an error.
    """
    labels_dir = labels_dir_for(images_dir)
    images: dict[str, str] = {}
    for rel, name in _walk_relative(images_dir):
        if not is_image_file(name):
            continue
        key = posixpath.splitext(rel)[0]
        if key in images:
            raise DataFormatError(
                f"{images_dir / rel}: another image has the same name ({images[key]}); "
                "each label file must match exactly one image, rename one of them"
            )
        images[key] = rel
    labels: dict[str, str] = {}
    if labels_dir.is_dir():
        for rel, name in _walk_relative(labels_dir):
            if name.endswith(".txt"):
                labels[rel[:-4]] = rel
    image_base, label_base = _dir_prefix(images_dir), _dir_prefix(labels_dir)
    pairs = [
        Pair(
            image_base + images[key],
            label_base + labels[key] if key in labels else None,
            images[key],
        )
        for key in sorted(images)
    ]
    orphans = [labels_dir / labels[key] for key in sorted(set(labels) - set(images))]
    return Pairing(pairs=pairs, orphan_labels=orphans)


class LabelRow(NamedTuple):
    """One parsed row: class id and clipped normalized coordinates."""

    class_id: int
    kind: RowKind
    coords: tuple[float, ...]
    line: int


@dataclass
class ParsedLabels:
    rows: list[LabelRow]
    problems: list[Problem]
    clipped: int = 0


def _clip(values: Sequence[float], tolerance: float) -> tuple[list[float], bool] | None:
    out = []
    clipped = False
    for v in values:
        if v < -tolerance or v > 1.0 + tolerance:
            return None
        if v < 0.0 or v > 1.0:
            clipped = True
            v = min(max(v, 0.0), 1.0)
        out.append(v)
    return out, clipped


def _parse_row(
    fields: list[str], file: str, line: int, num_classes: int, tolerance: float
) -> tuple[LabelRow | None, Problem | None, bool]:
    n = len(fields)
    where = f"{file}:{line}"
    if n != 5 and (n < 7 or n % 2 == 0):
        return (
            None,
            Problem(
                where,
                f"{n} columns; expected 5 (class cx cy w h) or "
                "1+2k with k>=3 (class x1 y1 ... xk yk)",
            ),
            False,
        )
    try:
        values = [float(f) for f in fields]
    except ValueError:
        bad = next(f for f in fields if not _is_float(f))
        return None, Problem(where, f"non-numeric value {bad!r}"), False
    if not all(math.isfinite(v) for v in values):
        return None, Problem(where, "non-finite value (nan/inf)"), False
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < num_classes:
        return (
            None,
            Problem(
                where, f"class id {fields[0]} is not in 0..{num_classes - 1} (names in data.yaml)"
            ),
            False,
        )
    if n == 5:
        cx, cy, w, h = values[1:]
        corners = _clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], tolerance)
        if corners is None:
            return (
                None,
                Problem(
                    where,
                    f"box {fields[1:]} reaches outside [0, 1] by more "
                    f"than the tolerance {tolerance}",
                ),
                False,
            )
        (x1, y1, x2, y2), clipped = corners
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            return None, Problem(where, "box has zero or negative width/height"), False
        coords = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1) if clipped else (cx, cy, w, h)
        return LabelRow(int(cls), "box", coords, line), None, clipped
    points = _clip(values[1:], tolerance)
    if points is None:
        return (
            None,
            Problem(where, f"polygon point outside [0, 1] by more than the tolerance {tolerance}"),
            False,
        )
    pts, clipped = points
    xs, ys = pts[0::2], pts[1::2]
    if max(xs) - min(xs) <= 0 or max(ys) - min(ys) <= 0:
        return None, Problem(where, "polygon has zero width or height"), False
    return LabelRow(int(cls), "polygon", tuple(pts), line), None, clipped


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _clean_box(fields: list[str], num_classes: int) -> tuple[float, ...] | None:
    """Fast path: the values of a valid box row needing no clipping, else None (NaN and inf
    fail the comparisons and go to the full check, which names the problem)."""
    try:
        cls, cx, cy, w, h = (float(f) for f in fields)
    except ValueError:
        return None
    half_w, half_h = w / 2, h / 2
    ok = (
        cls.is_integer() and 0 <= cls < num_classes and w > 0 and h > 0
        and cx - half_w >= 0 and cy - half_h >= 0 and cx + half_w <= 1 and cy + half_h <= 1
    )  # fmt: skip
    return (cls, cx, cy, w, h) if ok else None


def _clean_box_file(text: str, num_classes: int) -> list[LabelRow] | None:
    """Fast path for a whole file of valid box rows needing no clipping (the common case):
    one pass, plain ``float``. None sends the file to the full check, which names the
    problem (a blank line, a polygon row, NaN or inf, which fail the comparisons)."""
    rows: list[LabelRow] = []
    append = rows.append
    new_row = tuple.__new__  # what ``LabelRow._make`` does, without its per-call overhead
    try:
        for line, raw in enumerate(text.splitlines(), start=1):
            cls, cx, cy, w, h = map(float, raw.split())
            half_w, half_h = w / 2, h / 2
            if not (
                cls.is_integer() and 0 <= cls < num_classes and w > 0 and h > 0
                and cx - half_w >= 0 and cy - half_h >= 0
                and cx + half_w <= 1 and cy + half_h <= 1
            ):  # fmt: skip
                return None
            append(new_row(LabelRow, (int(cls), "box", (cx, cy, w, h), line)))
    except ValueError:  # not five numbers
        return None
    return rows or None


def parse_label_text(
    text: str, file: str, num_classes: int, tolerance: float = 0.01
) -> ParsedLabels:
    """Parse a label file's text; problems name ``file:line``. Blank lines are ignored.

    Each row is read as what it is: a file may mix box and polygon rows (labeling tools
    export such files), ``LabelRow.kind`` tells them apart.
    """
    clean = _clean_box_file(text, num_classes)
    if clean is not None:
        return ParsedLabels(rows=clean, problems=[])
    rows: list[LabelRow] = []
    problems: list[Problem] = []
    clipped = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) == 5:
            fast = _clean_box(fields, num_classes)
            if fast is not None:
                rows.append(LabelRow(int(fast[0]), "box", fast[1:], lineno))
                continue
        row, problem, was_clipped = _parse_row(fields, file, lineno, num_classes, tolerance)
        if problem is not None:
            problems.append(problem)
            continue
        assert row is not None
        clipped += was_clipped
        rows.append(row)
    return ParsedLabels(rows=rows, problems=problems, clipped=clipped)


def format_number(value: float) -> str:
    """A normalized coordinate with 10 significant digits (sub-micro-pixel at 640 px)."""
    return f"{value:.10g}"


def format_row(class_id: int, coords: Sequence[float]) -> str:
    return " ".join([str(class_id), *(format_number(v) for v in coords)])
