"""Arrange the flat ImageNet validation images into class folders (``val/<wnid>/*.JPEG``).

The output is built in a hidden sibling folder and renamed into place at the end, so a
finished ``out`` folder is always complete; an interrupted run leaves only that sibling.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from visionforge_resnet import devkit
from visionforge_resnet.devkit import DevkitError

Mode = Literal["copy", "symlink", "hardlink", "move"]
MODES: tuple[Mode, ...] = ("copy", "symlink", "hardlink", "move")
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})


@dataclass(frozen=True)
class GroundTruth:
    """Which class each validation image belongs to, and the classes known to the source."""

    labels: dict[str, str]
    source: str
    known_classes: list[str] | None = None


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`arrange_validation` wrote."""

    out: Path
    num_images: int
    images_per_class: dict[str, int]
    classes_without_images: list[str] = field(default_factory=list)


def load_ground_truth(
    *,
    loc_solution: Path | None = None,
    synset_mapping: Path | None = None,
    devkit_dir: Path | None = None,
    ground_truth: Path | None = None,
    synsets: Path | None = None,
) -> GroundTruth:
    """Read the ground truth from the CSV form or the devkit form (exactly one of them).

    CSV form: ``loc_solution`` (``LOC_val_solution.csv``), optionally ``synset_mapping``.
    Devkit form: ``devkit_dir`` (``ILSVRC2012_devkit_t12``, reads ``data/meta.mat`` and
    ``data/ILSVRC2012_validation_ground_truth.txt``), or ``ground_truth`` plus ``synsets``
    (``meta.mat`` or a wnid list in ILSVRC2012_ID order); explicit files override the folder.
    """
    devkit_form = devkit_dir is not None or ground_truth is not None or synsets is not None
    if loc_solution is not None and devkit_form:
        raise DevkitError(
            "give either the CSV form (--loc-solution) or the devkit form "
            "(--devkit / --ground-truth + --synsets), not both"
        )
    if loc_solution is not None:
        known = devkit.read_synset_mapping(synset_mapping) if synset_mapping else None
        labels = devkit.read_loc_solution(loc_solution, known)
        return GroundTruth(labels, str(loc_solution), known)
    if synset_mapping is not None:
        raise DevkitError("--synset-mapping goes with --loc-solution (the CSV form)")
    if devkit_dir is not None:
        data = devkit_dir / "data"
        ground_truth = ground_truth or data / "ILSVRC2012_validation_ground_truth.txt"
        synsets = synsets or data / "meta.mat"
    if ground_truth is None or synsets is None:
        raise DevkitError(
            "no ground truth given: pass --loc-solution LOC_val_solution.csv, or --devkit "
            "ILSVRC2012_devkit_t12, or --ground-truth ILSVRC2012_validation_ground_truth.txt "
            "with --synsets meta.mat"
        )
    ordered = devkit.read_devkit_synsets(synsets)
    labels = devkit.read_devkit_ground_truth(ground_truth, ordered)
    return GroundTruth(labels, str(ground_truth), ordered)


def _list_images(images_dir: Path) -> dict[str, Path]:
    if not images_dir.is_dir():
        raise DevkitError(f"{images_dir}: not a folder of validation images")
    found: dict[str, Path] = {}
    for path in images_dir.iterdir():
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in found:
            raise DevkitError(f"{images_dir}: {found[path.stem].name} and {path.name} clash")
        found[path.stem] = path
    if not found:
        raise DevkitError(f"{images_dir}: no .JPEG/.jpg/.png images found")
    return found


def _examples(names: set[str]) -> str:
    shown = sorted(names)[:3]
    return ", ".join(shown) + (", ..." if len(names) > 3 else "")


def _place(src: Path, dst: Path, mode: Mode) -> None:
    if mode == "copy":
        shutil.copy2(src, dst)
    elif mode == "symlink":
        dst.symlink_to(src.resolve())
    elif mode == "hardlink":
        os.link(src, dst)
    else:
        shutil.move(src, dst)


def arrange_validation(
    images_dir: Path,
    out: Path,
    ground_truth: GroundTruth,
    *,
    mode: Mode = "copy",
    progress: bool = True,
) -> PrepareResult:
    """Put every image of ``images_dir`` into ``out/<wnid>/`` following ``ground_truth``.

    Every listed image must exist and every image must be listed; ``out`` must not exist
    yet (or be empty).
    """
    if mode not in MODES:
        raise DevkitError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    images = _list_images(images_dir)
    labels: Mapping[str, str] = ground_truth.labels
    missing = set(labels) - set(images)
    if missing:
        raise DevkitError(
            f"{images_dir}: {len(missing)} image(s) of {ground_truth.source} are missing "
            f"({_examples(missing)}); is this the right image folder?"
        )
    unlabeled = set(images) - set(labels)
    if unlabeled:
        raise DevkitError(
            f"{images_dir}: {len(unlabeled)} image(s) have no entry in {ground_truth.source} "
            f"({_examples(unlabeled)}); is this the right ground-truth file?"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DevkitError(
            f"{out}: already exists and is not empty; remove it or pick another --out"
        )
    partial = out.parent / f".{out.name}.partial"
    if partial.exists():
        raise DevkitError(
            f"{partial}: left by an interrupted run; delete it (or, after --mode move, move its "
            "images back) and run again"
        )
    for wnid in sorted(set(labels.values())):
        (partial / wnid).mkdir(parents=True)
    for stem in tqdm(sorted(labels), desc="arranging val", unit="img", disable=not progress):
        src = images[stem]
        _place(src, partial / labels[stem] / src.name, mode)
    if out.exists():
        out.rmdir()
    partial.rename(out)
    counts = Counter(labels.values())
    empty = sorted(set(ground_truth.known_classes or ()) - set(counts))
    return PrepareResult(out, len(labels), dict(sorted(counts.items())), empty)
