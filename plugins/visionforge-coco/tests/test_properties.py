"""Property tests over large input spaces: split counts, label rows, polygon YOLO datasets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from visionforge_coco.datasets import YoloDetection
from visionforge_coco.split import assign_splits, exact_counts
from visionforge_coco.synthetic import ShapesSpec, write_synthetic
from visionforge_coco.yolo import format_row, parse_label_text

ratios = st.lists(st.integers(0, 100), min_size=2, max_size=3).filter(lambda r: sum(r) > 0)


@given(st.integers(0, 5000), ratios)
def test_exact_counts_sum_and_closeness(n: int, weights: list[int]) -> None:
    total = sum(weights)
    fractions = [w / total for w in weights]
    counts = exact_counts(n, fractions)
    assert sum(counts) == n
    assert all(abs(c - n * f) < 1 for c, f in zip(counts, fractions, strict=True))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 200), st.integers(0, 2**32 - 1), st.booleans())
def test_assign_splits_deterministic_and_exact(n: int, seed: int, stratify: bool) -> None:
    images = [{"id": i + 1} for i in range(n)]
    labels = {i + 1: {i % 3} for i in range(n)}
    first = assign_splits(images, labels, [0.7, 0.2, 0.1], seed=seed, stratify=stratify)
    assert first == assign_splits(images, labels, [0.7, 0.2, 0.1], seed=seed, stratify=stratify)
    assert [first.count(s) for s in range(3)] == exact_counts(n, [0.7, 0.2, 0.1])


coordinate = st.floats(0.0, 1.0, allow_nan=False)


@given(st.integers(0, 9), coordinate, coordinate, st.floats(1e-6, 1.0), st.floats(1e-6, 1.0))
def test_box_row_round_trip(cls: int, cx: float, cy: float, w: float, h: float) -> None:
    w, h = min(w, 2 * cx, 2 * (1 - cx)), min(h, 2 * cy, 2 * (1 - cy))
    if w <= 1e-9 or h <= 1e-9:
        return
    parsed = parse_label_text(format_row(cls, [cx, cy, w, h]) + "\n", "x.txt", 10)
    assert not parsed.problems
    (row,) = parsed.rows
    assert row.class_id == cls and row.kind == "box"
    assert row.coords == pytest.approx((cx, cy, w, h), abs=1e-9)


@pytest.mark.parametrize("rows", ["box", "polygon"])
def test_yolo_polygon_rows_give_the_shape_boxes(tmp_path: Path, rows: str) -> None:
    spec = ShapesSpec(num_images=3, image_size=40, seed=4)
    root = write_synthetic(tmp_path / "y", spec, "yolo", rows=rows, progress=False)  # type: ignore[arg-type]
    coco = write_synthetic(tmp_path / "c", spec, "coco", progress=False)
    from visionforge_coco.datasets import CocoDetection

    reference = CocoDetection(str(coco / "images"), str(coco / "annotations.json"))
    yolo = YoloDetection(str(root), "train")
    for i in range(3):
        torch.testing.assert_close(yolo[i]["target"]["boxes"], reference[i]["target"]["boxes"])
