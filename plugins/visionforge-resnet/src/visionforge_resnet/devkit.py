"""Readers for the ImageNet validation ground truth, in its two common distributions.

* Kaggle / LOC form: ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the class is the
  first token of the prediction string) and optionally ``LOC_synset_mapping.txt``
  (``n01440764 tench, Tinca tinca``: the known classes, in sorted wnid order).
* Devkit form: ``ILSVRC2012_validation_ground_truth.txt`` (line *i* holds the 1-based
  ``ILSVRC2012_ID`` of ``ILSVRC2012_val_{i:08d}``) plus the synsets in ``ILSVRC2012_ID``
  order, from the devkit's ``meta.mat`` or a text file with one wnid per line.

Every reader returns ``{image stem: wnid}`` and raises :class:`DevkitError` naming the file
and line at fault.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from visionforge.errors import VisionforgeError

WNID_PATTERN = re.compile(r"^n\d{8}$")
NUM_IMAGENET_CLASSES = 1000


class DevkitError(VisionforgeError, ValueError):
    """A ground-truth or synset file is missing or malformed."""


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise DevkitError(f"{path}: {what} not found; check the path")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DevkitError(f"{path}: cannot read {what}: {err}") from None


def _check_wnid(wnid: str, path: Path, line: int) -> str:
    if not WNID_PATTERN.match(wnid):
        raise DevkitError(
            f"{path}:{line}: {wnid!r} is not a WordNet id (expected n + 8 digits, e.g. n01440764)"
        )
    return wnid


def read_synset_mapping(path: Path) -> list[str]:
    """Wnids of ``LOC_synset_mapping.txt`` (or any ``wnid [words]`` list), in file order."""
    wnids: list[str] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(_read_lines(path, "synset list"), start=1):
        if not text.strip():
            continue
        wnid = _check_wnid(text.split()[0], path, number)
        if wnid in seen:
            raise DevkitError(
                f"{path}:{number}: {wnid} is listed twice (first on line {seen[wnid]})"
            )
        seen[wnid] = number
        wnids.append(wnid)
    if not wnids:
        raise DevkitError(f"{path}: the synset list is empty")
    return wnids


def read_loc_solution(path: Path, known: list[str] | None = None) -> dict[str, str]:
    """``{image stem: wnid}`` from ``LOC_val_solution.csv``; ``known`` restricts the wnids."""
    lines = _read_lines(path, "LOC_val_solution.csv")
    allowed = set(known) if known is not None else None
    rows = csv.reader(lines)
    header = next(rows, None)
    if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
        raise DevkitError(
            f"{path}:1: expected the header 'ImageId,PredictionString' of LOC_val_solution.csv"
        )
    labels: dict[str, str] = {}
    for number, row in enumerate(rows, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[1].split():
            raise DevkitError(f"{path}:{number}: expected 'ImageId,wnid x0 y0 x1 y1 ...'")
        stem = row[0].strip()
        wnid = _check_wnid(row[1].split()[0], path, number)
        if allowed is not None and wnid not in allowed:
            raise DevkitError(f"{path}:{number}: {wnid} is not in the synset mapping")
        if stem in labels:
            raise DevkitError(f"{path}:{number}: image {stem} is listed twice")
        labels[stem] = wnid
    if not labels:
        raise DevkitError(f"{path}: no images listed")
    return labels


def read_meta_mat(path: Path) -> list[str]:
    """Wnids of the 1000 leaf synsets of the devkit's ``meta.mat``, in ILSVRC2012_ID order."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    if not path.is_file():
        raise DevkitError(f"{path}: meta.mat not found; check the path")
    try:
        synsets = loadmat(str(path), squeeze_me=True)["synsets"]
        rows = [
            (int(s["ILSVRC2012_ID"]), str(s["WNID"]))
            for s in synsets.ravel()
            if int(s["num_children"]) == 0
        ]
    except (MatReadError, OSError, ValueError, KeyError, TypeError) as err:
        raise DevkitError(
            f"{path}: not a devkit meta.mat with a 'synsets' struct "
            f"(ILSVRC2012_ID, WNID, num_children): {err}"
        ) from None
    rows.sort()
    ids = [i for i, _ in rows]
    if ids != list(range(1, len(ids) + 1)):
        raise DevkitError(f"{path}: leaf ILSVRC2012_IDs are not 1..{len(ids)}")
    return [_check_wnid(wnid, path, i) for i, wnid in rows]


def read_devkit_synsets(path: Path) -> list[str]:
    """Synsets in ILSVRC2012_ID order from ``meta.mat`` or a text list (one wnid a line)."""
    if path.suffix.lower() == ".mat":
        return read_meta_mat(path)
    wnids = read_synset_mapping(path)
    if len(wnids) == NUM_IMAGENET_CLASSES and wnids == sorted(wnids):
        raise DevkitError(
            f"{path}: these 1000 wnids are in sorted order (like LOC_synset_mapping.txt), but "
            "ILSVRC2012_validation_ground_truth.txt counts in ILSVRC2012_ID order; "
            "pass the devkit's data/meta.mat instead"
        )
    return wnids


def read_devkit_ground_truth(path: Path, synsets: list[str]) -> dict[str, str]:
    """``{ILSVRC2012_val_%08d: wnid}`` from ``ILSVRC2012_validation_ground_truth.txt``."""
    lines = _read_lines(path, "ground-truth file")
    while lines and not lines[-1].strip():
        lines.pop()
    labels: dict[str, str] = {}
    for number, text in enumerate(lines, start=1):
        token = text.strip()
        if not token.isdigit() or not 1 <= int(token) <= len(synsets):
            raise DevkitError(
                f"{path}:{number}: expected a class id in 1..{len(synsets)}, got {token!r}"
            )
        labels[f"ILSVRC2012_val_{number:08d}"] = synsets[int(token) - 1]
    if not labels:
        raise DevkitError(f"{path}: no images listed")
    return labels
