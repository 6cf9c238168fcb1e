"""Reproducible train/val/test splits of a COCO dataset.

Units are images, or groups of images sharing a key (``group_by``: an image field such as
``video_id``) so related images stay together. Units are shuffled with numpy's PCG64 from
``seed`` after sorting, so the same input and seed give the same split on every machine.
Without groups and stratification the counts are exact (largest remainder); otherwise
units go, one by one, to the split furthest below its target, rarest class first when
stratifying by class presence.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionforge_coco.cocofile import dataset_paths, dumps_coco, load_coco, safe_relative
from visionforge_coco.convert import parallel_map
from visionforge_coco.problems import DataFormatError
from visionforge_coco.provenance import record_dataset
from visionforge_coco.staging import LinkMode, StagedDir

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class SplitReport:
    output: str
    counts: dict[str, int]
    annotations: dict[str, int]

    def summary(self) -> str:
        parts = ", ".join(
            f"{k} {v} images/{self.annotations[k]} annotations" for k, v in self.counts.items()
        )
        return f"split -> {self.output}: {parts}"


def exact_counts(n: int, ratios: Sequence[float]) -> list[int]:
    """Integer counts summing to ``n``, by largest remainder of ``n * ratio``."""
    raw = [n * r for r in ratios]
    counts = [math.floor(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def check_ratios(ratios: Sequence[float]) -> list[float]:
    if not 2 <= len(ratios) <= 3:
        raise DataFormatError(f"--ratios {list(ratios)}: give 2 or 3 ratios (train val [test])")
    if any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise DataFormatError(f"--ratios {list(ratios)}: ratios must be >= 0 and sum to 1")
    return list(ratios)


def assign_splits(
    images: Sequence[dict[str, Any]],
    labels: dict[int, set[int]],
    ratios: Sequence[float],
    seed: int = 42,
    stratify: bool = False,
    group_by: str | None = None,
) -> list[int]:
    """Split index (0=train, 1=val, 2=test) of every image, in input order."""
    ratios = check_ratios(ratios)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        if group_by is None:
            key = f"{img['id']:020d}"
        elif group_by not in img:
            raise DataFormatError(f"image id {img['id']}: no field {group_by!r} to group by")
        else:
            key = str(img[group_by])
        groups[key].append(i)
    keys = sorted(groups)
    rng = np.random.Generator(np.random.PCG64(seed))
    order = [keys[i] for i in rng.permutation(len(keys))]
    result = [0] * len(images)
    if not stratify and group_by is None:
        counts = exact_counts(len(order), ratios)
        bounds = np.cumsum(counts)
        for pos, key in enumerate(order):
            result[groups[key][0]] = int(np.searchsorted(bounds, pos, side="right"))
        return result
    targets = np.asarray(exact_counts(len(images), ratios), dtype=np.float64)
    filled = np.zeros(len(ratios))
    unit_classes = {
        k: set().union(*(labels.get(images[i]["id"], set()) for i in groups[k])) for k in order
    }
    class_total = Counter(c for k in order for c in unit_classes[k])
    class_target = {c: np.asarray(ratios) * n for c, n in class_total.items()}
    class_filled = {c: np.zeros(len(ratios)) for c in class_total}
    if stratify:
        rank = {k: min((class_total[c] for c in unit_classes[k]), default=math.inf) for k in order}
        order = sorted(order, key=lambda k: rank[k])  # stable: keeps the shuffled order
    for key in order:
        members = groups[key]
        deficit = targets - filled
        open_splits = deficit >= len(members)
        if not open_splits.any():
            open_splits = deficit == deficit.max()
        if stratify and unit_classes[key]:
            rare = min(unit_classes[key], key=lambda c: (class_total[c], c))
            need = np.where(open_splits, class_target[rare] - class_filled[rare], -np.inf)
            choice = int(np.lexsort((-deficit, -need))[0])
        else:
            choice = int(np.argmax(np.where(open_splits, deficit, -np.inf)))
        filled[choice] += len(members)
        for c in unit_classes[key]:
            class_filled[c][choice] += 1
        for i in members:
            result[i] = choice
    return result


def split_dataset(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    ratios: Sequence[float] = (0.7, 0.2, 0.1),
    seed: int = 42,
    stratify: bool = False,
    group_by: str | None = None,
    link: LinkMode = "copy",
    progress: bool = True,
) -> SplitReport:
    """Split the COCO dataset ``src`` into ``dst/<split>/{images/, annotations.json}``."""
    ann_path, images_root = dataset_paths(src)
    data = load_coco(ann_path)
    labels: dict[int, set[int]] = defaultdict(set)
    for ann in data["annotations"]:
        labels[ann["image_id"]].add(ann["category_id"])
    assignment = assign_splits(data["images"], labels, ratios, seed, stratify, group_by)
    names = SPLIT_NAMES[: len(check_ratios(ratios))]
    counts = {name: 0 for name in names}
    ann_counts = {name: 0 for name in names}
    with StagedDir(dst) as out:

        def place(item: tuple[dict[str, Any], int]) -> None:
            img, split = item
            rel = safe_relative(img["file_name"])
            source = images_root / str(rel)
            if not source.is_file():
                raise DataFormatError(f"{ann_path}: image id {img['id']}: {source} not found")
            out.place(source, f"{names[split]}/images/{rel}", link)

        parallel_map(
            place, list(zip(data["images"], assignment, strict=True)), None, "split", progress
        )
        split_of = {img["id"]: s for img, s in zip(data["images"], assignment, strict=True)}
        for index, name in enumerate(names):
            images = [img for img, s in zip(data["images"], assignment, strict=True) if s == index]
            anns = [a for a in data["annotations"] if split_of[a["image_id"]] == index]
            counts[name], ann_counts[name] = len(images), len(anns)
            subset = {**data, "images": images, "annotations": anns}
            out.write_bytes(f"{name}/annotations.json", dumps_coco(subset))
    for name in names:
        record_dataset(
            Path(dst) / name / "annotations.json",
            [ann_path],
            operation="split",
            split=name,
            seed=seed,
            ratios=list(ratios),
        )
    return SplitReport(output=str(Path(dst)), counts=counts, annotations=ann_counts)
