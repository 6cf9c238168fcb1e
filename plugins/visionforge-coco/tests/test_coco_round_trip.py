"""COCO -> YOLO -> COCO on COCO-shaped data: category ids with COCO's gaps, RLE and
polygon crowd regions, images without annotations."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from visionforge_coco.convert import coco_to_yolo, yolo_to_coco
from visionforge_coco.datasets import CocoDetection, YoloDetection
from visionforge_coco.problems import DataFormatError
from visionforge_coco.verify import verify_coco, verify_dataset

COCO_NAMES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus",
    7: "train", 8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant",
    13: "stop sign", 14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog",
    19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear", 24: "zebra",
    25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie",
    33: "suitcase", 34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball",
    38: "kite", 39: "baseball bat", 40: "baseball glove", 41: "skateboard",
    42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass", 47: "cup",
    48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog",
    59: "pizza", 60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant",
    65: "bed", 67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse",
    75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven",
    80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}  # fmt: skip
"""COCO 2017's 80 categories: ids 1..90 with 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 unused."""


def _write_image(path: Path, width: int, height: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(width * height).integers(0, 255, (height, width, 3))
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _rle(box: tuple[int, int, int, int], width: int, height: int, compressed: bool) -> Any:
    """The RLE of a filled box: COCO's uncompressed ``counts`` list or compressed string."""
    x, y, w, h = box
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask))
        return {"size": [height, width], "counts": rle["counts"].decode()}
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])) != 0)
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": [height, width], "counts": counts}


def _polygon(box: tuple[float, float, float, float]) -> list[float]:
    """A pentagon spanning ``box`` exactly (its extent is the box)."""
    x, y, w, h = box
    return [x + w / 2, y, x + w, y + h / 3, x + 0.8 * w, y + h, x + 0.1 * w, y + h, x, y + h / 2]


def _annotation(ann_id: int, image_id: int, category: int, **fields: Any) -> dict[str, Any]:
    return {"id": ann_id, "image_id": image_id, "category_id": category, **fields}


def coco_val_like(root: Path) -> tuple[Path, Path]:
    """A small dataset shaped like COCO val: all 80 categories (gapped ids, listed out of
    order), polygon objects, crowd regions as uncompressed RLE, compressed RLE and polygon,
    and an image without annotations. Returns (images dir, annotations file)."""
    sizes = {"000000000139.jpg": (64, 48), "000000000632.jpg": (80, 60), "empty.jpg": (40, 40)}
    for name, (w, h) in sizes.items():
        _write_image(root / "images" / name, w, h)
    images = [
        {"id": 139, "file_name": "000000000139.jpg", "width": 64, "height": 48},
        {"id": 632, "file_name": "000000000632.jpg", "width": 80, "height": 60},
        {"id": 7, "file_name": "empty.jpg", "width": 40, "height": 40},
    ]
    person, toothbrush, tv = (3.5, 4.25, 20.0, 30.5), (1, 2, 10, 7), (50.5, 0, 29.5, 19.75)
    orange_rle = _rle((30, 10, 20, 12), 64, 48, compressed=False)
    chair_polygon = [[5, 30, 15, 30, 15, 40, 5, 40]]
    book_rle = _rle((40, 20, 30, 30), 80, 60, compressed=True)
    annotations = [
        _annotation(10, 139, 1, bbox=list(person), segmentation=[_polygon(person)], iscrowd=0),
        _annotation(11, 139, 55, bbox=[30, 10, 20, 12], segmentation=orange_rle, iscrowd=1),
        _annotation(12, 139, 62, bbox=[5, 30, 10, 10], segmentation=chair_polygon, iscrowd=1),
        _annotation(13, 632, 84, bbox=[40, 20, 30, 30], segmentation=book_rle, iscrowd=1),
        _annotation(14, 632, 90, bbox=list(toothbrush), segmentation=[_polygon(toothbrush)]),
        _annotation(15, 632, 72, bbox=list(tv), segmentation=[_polygon(tv)], iscrowd=0),
    ]
    for ann in annotations:
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    categories = [{"id": i, "name": n, "supercategory": "x"} for i, n in COCO_NAMES.items()]
    coco = {"images": images, "annotations": annotations, "categories": categories[::-1]}
    path = root / "instances_val.json"
    path.write_text(json.dumps(coco))
    return root / "images", path


def _objects(coco: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """Per file name: sorted plain objects (name, bbox) and crowd regions (name, bbox,
    segmentation), everything by category *name*."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {img["id"]: img["file_name"] for img in coco["images"]}
    out: dict[str, dict[str, list[Any]]] = {f: {"plain": [], "crowd": []} for f in files.values()}
    for ann in coco["annotations"]:
        entry = out[files[ann["image_id"]]]
        if ann.get("iscrowd"):
            entry["crowd"].append((names[ann["category_id"]], ann["bbox"], ann["segmentation"]))
        else:
            entry["plain"].append((names[ann["category_id"]], ann["bbox"]))
    for entry in out.values():
        entry["plain"].sort(key=lambda o: (o[0], o[1]))
        entry["crowd"].sort(key=lambda o: (o[0], o[1]))
    return out


def assert_same_dataset(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Every image, category name, box (0.5 px) and crowd region with its category."""
    assert sorted(c["name"] for c in after["categories"]) == sorted(
        c["name"] for c in before["categories"]
    )
    size = {img["file_name"]: (img["width"], img["height"]) for img in before["images"]}
    assert {img["file_name"]: (img["width"], img["height"]) for img in after["images"]} == size
    expected, got = _objects(before), _objects(after)
    assert got.keys() == expected.keys()
    for name, entry in expected.items():
        assert got[name]["crowd"] == entry["crowd"], name
        assert [o[0] for o in got[name]["plain"]] == [o[0] for o in entry["plain"]], name
        assert _one_to_one_within(got[name]["plain"], entry["plain"], 0.5), name


def _one_to_one_within(got: list[Any], expected: list[Any], tolerance: float) -> bool:
    """Whether every expected (class, box) has a returned one of its own, same class, every
    coordinate within ``tolerance``: a matching, not list order (boxes that differ only in
    their third coordinate may come back sorted the other way by a 1e-10 rounding)."""
    far = np.array(
        [
            [
                g[0] != e[0] or max(abs(a - b) for a, b in zip(g[1], e[1], strict=True)) > tolerance
                for e in expected
            ]
            for g in got
        ],
        dtype=float,
    ).reshape(len(got), len(expected))
    rows, cols = linear_sum_assignment(far)
    return len(got) == len(expected) and not far[rows, cols].any()


def _round_trip(images: Path, annotations: Path, work: Path, rows: str) -> dict[str, Any]:
    coco_to_yolo(images, annotations, work / "yolo", split="val", rows=rows, progress=False)  # type: ignore[arg-type]
    yolo_to_coco(work / "yolo", work / "back", split="val", progress=False)
    return dict(json.loads((work / "back/annotations.json").read_text()))


@pytest.mark.parametrize("rows", ["auto", "box", "polygon"])
def test_coco_val_like_round_trip(tmp_path: Path, rows: str) -> None:
    images, annotations = coco_val_like(tmp_path / "coco")
    before = json.loads(annotations.read_text())
    after = _round_trip(images, annotations, tmp_path, rows)
    assert_same_dataset(before, after)
    crowd = _objects(after)
    assert [o[0] for o in crowd["000000000139.jpg"]["crowd"]] == ["chair", "orange"]
    assert [o[0] for o in crowd["000000000632.jpg"]["crowd"]] == ["book"]
    assert crowd["empty.jpg"] == {"plain": [], "crowd": []}
    if rows != "box":  # polygons come back too (auto: every object has one, as in COCO)
        polygons = {a["bbox"][0]: a["segmentation"] for a in after["annotations"]}
        for ann in before["annotations"]:
            if not ann.get("iscrowd"):
                assert polygons[ann["bbox"][0]][0] == pytest.approx(
                    ann["segmentation"][0], abs=1e-6
                )


def test_yolo_side_names_crowd_classes_like_the_rows(tmp_path: Path) -> None:
    images, annotations = coco_val_like(tmp_path / "coco")
    coco_to_yolo(images, annotations, tmp_path / "yolo", split="val", progress=False)
    crowd = json.loads((tmp_path / "yolo/labels/val/crowd.json").read_text())
    dataset = YoloDetection(str(tmp_path / "yolo"), "val")
    assert dataset.class_names == list(COCO_NAMES.values())
    assert [dataset.class_names[r["class"]] for r in crowd["000000000139.jpg"]] == [
        "orange",
        "chair",
    ]
    item = dataset[0]  # 000000000139.jpg: a person, an orange crowd and a chair crowd
    labels = [dataset.class_names[c] for c in item["target"]["labels"].tolist()]
    assert labels == ["person", "orange", "chair"]
    assert item["target"]["iscrowd"].tolist() == [0, 1, 1]
    reference = CocoDetection(str(images), str(annotations))
    expected = reference[1]  # ids sort 7, 139, 632: reference[1] is 000000000139.jpg
    assert [reference.class_names[c] for c in expected["target"]["labels"].tolist()] == labels
    torch.testing.assert_close(item["target"]["boxes"], expected["target"]["boxes"])
    report = verify_dataset(tmp_path / "yolo", progress=False)
    assert report.ok and report.counts["crowd regions"] == 3
    assert report.counts["background images"] == 1


def _write_crowd(root: Path, regions: list[dict[str, Any]]) -> Path:
    path = root / "labels/val/crowd.json"
    path.write_text(json.dumps({"000000000139.jpg": regions}))
    return path


@pytest.mark.parametrize(
    ("region", "message"),
    [
        (
            {"category_id": 55, "bbox": [30, 10, 20, 12]},
            "has 'category_id' 55 but no 'class'",
        ),
        ({"class": 80, "bbox": [30, 10, 20, 12]}, r"'class' 80 is not in 0\.\.79"),
        ({"class": 3, "bbox": [30, 10, 0, 12]}, "zero or negative width/height"),
        ({"class": 3, "bbox": [30, 10, 5, 5], "segmentation": [[1, 2]]}, "'segmentation'"),
    ],
)
def test_bad_crowd_region_names_file_image_and_region(
    tmp_path: Path, region: dict[str, Any], message: str
) -> None:
    images, annotations = coco_val_like(tmp_path / "coco")
    coco_to_yolo(images, annotations, tmp_path / "yolo", split="val", progress=False)
    path = _write_crowd(tmp_path / "yolo", [{"class": 49, "bbox": [1, 1, 2, 2]}, region])
    where = f"{path}: '000000000139.jpg' crowd region 1: "
    with pytest.raises(DataFormatError, match=message) as err:
        yolo_to_coco(tmp_path / "yolo", tmp_path / "back", split="val", progress=False)
    assert str(err.value).startswith(where)
    assert not (tmp_path / "back").exists()
    with pytest.raises(DataFormatError, match=message) as err:
        YoloDetection(str(tmp_path / "yolo"), "val")
    assert str(err.value).startswith(where)
    (problem,) = verify_dataset(tmp_path / "yolo", progress=False).problems
    assert str(problem).startswith(where)
    report = yolo_to_coco(
        tmp_path / "yolo", tmp_path / "back", split="val", skip_invalid=True, progress=False
    )
    assert report.images == 2 and [str(p) for p in report.skipped] == [str(problem)]


def test_crowd_regions_of_missing_images_are_an_error(tmp_path: Path) -> None:
    images, annotations = coco_val_like(tmp_path / "coco")
    coco_to_yolo(images, annotations, tmp_path / "yolo", split="val", progress=False)
    path = tmp_path / "yolo/labels/val/crowd.json"
    path.write_text(json.dumps({"gone.jpg": [{"class": 0, "bbox": [1, 1, 2, 2]}]}))
    message = f"{path}: crowd regions for 'gone.jpg', which has no image"
    with pytest.raises(DataFormatError, match=message):
        yolo_to_coco(tmp_path / "yolo", tmp_path / "back", split="val", progress=False)
    with pytest.raises(DataFormatError, match=message):
        YoloDetection(str(tmp_path / "yolo"), "val")
    assert [str(p) for p in verify_dataset(tmp_path / "yolo", progress=False).problems] == [message]


def test_undefined_category_id_is_an_error_everywhere(tmp_path: Path) -> None:
    """Id 12 is one of COCO's unused ids: convert, verify and the dataset name the file
    and the annotation id."""
    images, annotations = coco_val_like(tmp_path / "coco")
    coco = json.loads(annotations.read_text())
    coco["annotations"][2]["category_id"] = 12  # the chair crowd, annotation id 12
    coco["annotations"][4]["category_id"] = 83  # the toothbrush, annotation id 14
    annotations.write_text(json.dumps(coco))
    first = f"{annotations}: annotation id 12: category_id 12 is not in 'categories'"
    second = f"{annotations}: annotation id 14: category_id 83 is not in 'categories'"
    with pytest.raises(DataFormatError) as err:
        coco_to_yolo(images, annotations, tmp_path / "yolo", progress=False)
    assert str(err.value).startswith(first) and "1 more problem" in str(err.value)
    assert not (tmp_path / "yolo").exists()
    report = coco_to_yolo(images, annotations, tmp_path / "yolo", skip_invalid=True, progress=False)
    assert [str(p) for p in report.skipped] == [first, second]
    problems = [str(p) for p in verify_coco(annotations, images, progress=False).problems]
    assert problems == [first, second]
    with pytest.raises(DataFormatError) as err:
        CocoDetection(str(images), str(annotations))
    assert str(err.value).startswith(first)


# ---------------------------------------------------------------- property


@st.composite
def coco_datasets(draw: st.DrawFn) -> dict[str, Any]:
    """Random COCO-shaped datasets: 1-6 categories with gapped ids in any order, 1-4 images
    (some without annotations), objects as boxes or polygons, crowd regions as RLE or
    polygons."""
    cat_ids = draw(st.lists(st.integers(1, 120), min_size=1, max_size=6, unique=True))
    categories = [{"id": i, "name": f"class-{i}"} for i in cat_ids]
    polygons = draw(st.sampled_from(["all", "none", "some"]))
    images, annotations = [], []
    for image_id in range(1, draw(st.integers(1, 4)) + 1):
        width, height = draw(st.integers(8, 48)), draw(st.integers(8, 48))
        images.append(
            {"id": image_id * 3, "file_name": f"{image_id}.png", "width": width, "height": height}
        )
        for _ in range(draw(st.integers(0, 4))):
            x, y = draw(st.integers(0, width - 2)), draw(st.integers(0, height - 2))
            w, h = draw(st.integers(1, width - x)), draw(st.integers(1, height - y))
            box = (x, y, w, h)
            crowd = draw(st.sampled_from([None, "rle", "compressed", "polygon"]))
            ann: dict[str, Any] = {
                "id": len(annotations) + 100,
                "image_id": image_id * 3,
                "category_id": draw(st.sampled_from(cat_ids)),
                "bbox": [float(v) for v in box],
                "area": float(w * h),
                "iscrowd": int(crowd is not None),
            }
            some = polygons == "some" and draw(st.booleans())
            if crowd in ("rle", "compressed"):
                ann["segmentation"] = _rle(box, width, height, crowd == "compressed")
            elif crowd == "polygon" or polygons == "all" or some:
                ann["segmentation"] = [_polygon(ann["bbox"])]
            annotations.append(ann)
    return {"images": images, "annotations": annotations, "categories": categories}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coco_datasets(), st.sampled_from(["auto", "box", "polygon"]))
def test_round_trip_gives_back_every_box_category_and_crowd_region(
    coco: dict[str, Any], rows: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for img in coco["images"]:
            _write_image(work / "coco/images" / img["file_name"], img["width"], img["height"])
        path = work / "coco/instances.json"
        path.write_text(json.dumps(coco))
        after = _round_trip(work / "coco/images", path, work, rows)
    assert_same_dataset(coco, after)
