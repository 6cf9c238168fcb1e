"""Property tests over large input spaces: split counts, label rows, polygon YOLO datasets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from visionforge_coco.convert import yolo_to_coco
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
    assume(w > 1e-9 and h > 1e-9)  # a box inside the image: hypothesis draws another
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


def _spread(values: list[float]) -> bool:
    return max(values) - min(values) > 1e-3


@st.composite
def label_rows(draw: st.DrawFn) -> tuple[str, int, tuple[float, ...]]:
    """(kind, class, coords) of a valid box row (cx cy w h) or polygon row (3-6 points)."""
    cls = draw(st.integers(0, 2))
    if draw(st.booleans()):
        xs = sorted(draw(st.lists(coordinate, min_size=2, max_size=2).filter(_spread)))
        ys = sorted(draw(st.lists(coordinate, min_size=2, max_size=2).filter(_spread)))
        return "box", cls, ((xs[0] + xs[1]) / 2, (ys[0] + ys[1]) / 2, xs[1] - xs[0], ys[1] - ys[0])
    points = draw(st.lists(st.tuples(coordinate, coordinate), min_size=3, max_size=6))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    assume(_spread(xs) and _spread(ys))
    return "polygon", cls, tuple(v for p in points for v in p)


@settings(max_examples=50)
@given(st.lists(label_rows(), min_size=1, max_size=8))
def test_mixed_rows_are_each_read_as_what_they_are(
    rows: list[tuple[str, int, tuple[float, ...]]],
) -> None:
    text = "".join(format_row(cls, coords) + "\n" for _, cls, coords in rows)
    parsed = parse_label_text(text, "x.txt", 3)
    assert not parsed.problems
    assert [(r.kind, r.class_id) for r in parsed.rows] == [(k, c) for k, c, _ in rows]
    for row, (_, _, coords) in zip(parsed.rows, rows, strict=True):
        assert row.coords == pytest.approx(coords, abs=1e-9)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(label_rows(), min_size=1, max_size=6))
def test_mixed_label_file_to_coco_segmentation_only_for_polygon_rows(
    make_yolo: Callable[..., Path], tmp_path: Path, rows: list[tuple[str, int, tuple[float, ...]]]
) -> None:
    """The same image is rewritten by each example; only its label file changes."""
    text = "".join(format_row(cls, coords) + "\n" for _, cls, coords in rows)
    root = make_yolo({"a.png": text}, names=("a", "b", "c"))
    yolo_to_coco(root, tmp_path / "coco", split="train", progress=False)
    anns = json.loads((tmp_path / "coco/annotations.json").read_text())["annotations"]
    assert ["segmentation" in a for a in anns] == [kind == "polygon" for kind, _, _ in rows]
    assert [a["category_id"] for a in anns] == [cls + 1 for _, cls, _ in rows]
    for ann, (kind, _, coords) in zip(anns, rows, strict=True):
        xs, ys = [v * 64 for v in coords[0::2]], [v * 48 for v in coords[1::2]]
        if kind == "box":
            cx, cy, w, h = xs[0], ys[0], xs[1], ys[1]
            expected = [cx - w / 2, cy - h / 2, w, h]
        else:
            expected = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        assert ann["bbox"] == pytest.approx(expected, abs=1e-6)
