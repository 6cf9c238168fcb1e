"""YOLO <-> COCO conversion: round trips, links, incremental runs and every bad input."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from visionforge_coco.convert import coco_to_yolo, yolo_to_coco
from visionforge_coco.problems import DataFormatError
from visionforge_coco.synthetic import ShapesSpec, write_synthetic
from visionforge_coco.yolo import parse_label_text

YoloFactory = Callable[..., Path]
ImageWriter = Callable[..., Path]


def _rows(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("rows", ["box", "polygon"])
def test_round_trip_yolo_coco_yolo_reproduces_labels(tmp_path: Path, rows: str) -> None:
    spec = ShapesSpec(num_images=6, image_size=64, seed=3)
    src = write_synthetic(tmp_path / "src", spec, "yolo", rows=rows, progress=False)  # type: ignore[arg-type]
    yolo_to_coco(src, tmp_path / "coco", split="train", progress=False)
    coco_to_yolo(
        tmp_path / "coco/images",
        tmp_path / "coco/annotations.json",
        tmp_path / "back",
        split="train",
        progress=False,
    )
    originals = sorted((src / "labels/train").glob("*.txt"))
    assert originals
    for label in originals:
        again = _rows(tmp_path / "back/labels/train" / label.name)
        before = _rows(label)
        assert len(again) == len(before)
        for a, b in zip(again, before, strict=True):
            assert a == pytest.approx(b, abs=1e-9)
    data_yaml = (tmp_path / "back/data.yaml").read_text()
    assert "rectangle" in data_yaml and "train: images/train" in data_yaml


def test_coco_output_categories_boxes_and_area(make_yolo: YoloFactory, tmp_path: Path) -> None:
    root = make_yolo(
        {
            "a.png": "1 0.5 0.5 0.25 0.5\n",
            "b.png": "0 0.25 0.25 0.5 0.25 0.75 0.75\n",  # polygon (triangle)
        }
    )
    report = yolo_to_coco(root, tmp_path / "out", split="train", progress=False)
    coco = json.loads((tmp_path / "out/annotations.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    box, poly = coco["annotations"]
    assert box["category_id"] == 2 and box["bbox"] == [24.0, 12.0, 16.0, 24.0]
    assert box["area"] == 16.0 * 24.0
    assert poly["category_id"] == 1
    assert poly["segmentation"] == [[16.0, 12.0, 32.0, 12.0, 48.0, 36.0]]
    assert poly["area"] == pytest.approx(192.0, rel=0.15)  # rasterized like COCO
    assert report.images == 2 and report.annotations == 2


def test_annotation_ids_are_consecutive(make_yolo: YoloFactory, tmp_path: Path) -> None:
    rows = "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n0 0.7 0.7 0.2 0.2\n"
    root = make_yolo({"a.png": rows, "b.png": rows, "c.png": ""})
    yolo_to_coco(root, tmp_path / "out", split="train", progress=False)
    coco = json.loads((tmp_path / "out/annotations.json").read_text())
    assert [a["id"] for a in coco["annotations"]] == list(range(1, 7))
    assert [a["image_id"] for a in coco["annotations"]] == [1, 1, 1, 2, 2, 2]


def test_id_names_hard_links_and_incremental(make_yolo: YoloFactory, tmp_path: Path) -> None:
    root = make_yolo({"z.png": "0 0.5 0.5 0.2 0.2\n", "a.png": ""})
    out = tmp_path / "out"
    yolo_to_coco(root, out, split="train", id_names=True, link="hard", progress=False)
    coco = json.loads((out / "annotations.json").read_text())
    assert [img["file_name"] for img in coco["images"]] == ["000001.png", "000002.png"]
    assert os.path.samefile(out / "images/000002.png", root / "images/train/z.png")
    ann_stat = (out / "annotations.json").stat()
    again = yolo_to_coco(root, out, split="train", id_names=True, link="hard", progress=False)
    assert again.reused == 3  # two images and the unchanged annotations.json
    assert (out / "annotations.json").stat().st_ino == ann_stat.st_ino
    assert (out / "annotations.json").stat().st_mtime_ns == ann_stat.st_mtime_ns


def test_copy_mode_reuses_unchanged_copies(make_yolo: YoloFactory, tmp_path: Path) -> None:
    root = make_yolo({"a.png": "0 0.5 0.5 0.2 0.2\n"})
    yolo_to_coco(root, tmp_path / "out", split="train", progress=False)
    inode = (tmp_path / "out/images/a.png").stat().st_ino
    report = yolo_to_coco(root, tmp_path / "out", split="train", progress=False)
    assert report.rewritten == 0
    assert (tmp_path / "out/images/a.png").stat().st_ino == inode


def test_symlinks_and_all_splits(make_yolo: YoloFactory, tmp_path: Path) -> None:
    root = make_yolo({"a.png": "0 0.5 0.5 0.2 0.2\n"})
    yolo_to_coco(root, tmp_path / "out", link="sym", progress=False)
    assert (tmp_path / "out/train/images/a.png").is_symlink()
    assert (tmp_path / "out/train/annotations.json").is_file()


def test_background_image_is_kept(make_yolo: YoloFactory, tmp_path: Path) -> None:
    root = make_yolo({"bg.png": "", "a.png": "0 0.5 0.5 0.2 0.2\n"})
    yolo_to_coco(root, tmp_path / "out", split="train", progress=False)
    coco = json.loads((tmp_path / "out/annotations.json").read_text())
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 0.5 0.5 0.2\n", "4 columns"),
        ("0 0.5 abc 0.2 0.2\n", "non-numeric value 'abc'"),
        ("2 0.5 0.5 0.2 0.2\n", "class id 2 is not in 0..1"),
        ("0 0.5 0.5 1.4 0.2\n", r"outside \[0, 1\]"),
    ],
)
def test_bad_rows_stop_with_file_and_line(
    make_yolo: YoloFactory, tmp_path: Path, text: str, message: str
) -> None:
    root = make_yolo({"a.png": "0 0.5 0.5 0.1 0.1\n", "b.png": text})
    with pytest.raises(DataFormatError, match=message) as err:
        yolo_to_coco(root, tmp_path / "out", split="train", progress=False)
    assert "b.txt:" in str(err.value)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))  # staging removed


def test_slightly_outside_is_clipped_and_counted() -> None:
    parsed = parse_label_text("0 0.5 0.5 1.01 0.2\n0 0.5 0.5 0.2 0.2\n", "x.txt", 1)
    assert parsed.clipped == 1 and not parsed.problems
    cx, _, w, _ = parsed.rows[0].coords
    assert cx - w / 2 == 0.0 and cx + w / 2 == 1.0


def test_skip_invalid_reports_every_skipped_item(make_yolo: YoloFactory, tmp_path: Path) -> None:
    """With ``strict_labels`` an image without a label file is one of the skipped items."""
    root = make_yolo(
        {"good.png": "0 0.5 0.5 0.2 0.2\n", "bad.png": "7 0.5 0.5 0.2 0.2\n", "nolabel.png": None},
        extra_labels={"orphan.txt": "0 0.5 0.5 0.2 0.2\n"},
    )
    (root / "images/train/corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "labels/train/corrupt.txt").write_text("")
    with pytest.raises(DataFormatError, match="--skip-invalid"):
        yolo_to_coco(root, tmp_path / "out", split="train", strict_labels=True, progress=False)
    report = yolo_to_coco(
        root,
        tmp_path / "out",
        split="train",
        skip_invalid=True,
        strict_labels=True,
        progress=False,
    )
    written = json.loads((tmp_path / "out/conversion_report.json").read_text())
    wheres = " ".join(p["where"] + p["message"] for p in written["skipped"])
    for needle in ("bad.txt:1", "nolabel.png", "orphan.txt", "corrupt.png"):
        assert needle in wheres
    assert report.images == 1 and len(report.skipped) == 4


def test_ambiguous_image_names_are_an_error(
    make_yolo: YoloFactory, tmp_path: Path, image_writer: ImageWriter
) -> None:
    root = make_yolo({"a.png": "0 0.5 0.5 0.2 0.2\n"})
    image_writer(root / "images/train/a.jpg")
    with pytest.raises(DataFormatError, match="same name"):
        yolo_to_coco(root, tmp_path / "out", split="train", progress=False)


def test_exif_orientation_swaps_size(make_yolo: YoloFactory, tmp_path: Path) -> None:
    root = make_yolo({"a.png": "0 0.5 0.5 0.2 0.2\n"})
    from PIL import Image

    path = root / "images/train/a.jpg"
    (root / "images/train/a.png").unlink()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: displayed portrait
    Image.new("RGB", (64, 48)).save(path, exif=exif)
    yolo_to_coco(root, tmp_path / "out", split="train", progress=False)
    img = json.loads((tmp_path / "out/annotations.json").read_text())["images"][0]
    assert (img["width"], img["height"]) == (48, 64)


def test_crowd_annotations_survive_coco_yolo_coco(
    tmp_path: Path, image_writer: ImageWriter
) -> None:
    image_writer(tmp_path / "images/a.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [1, 2, 10, 10],
                "area": 100,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 1,
                "bbox": [20, 5, 30, 20],
                "area": 300,
                "iscrowd": 1,
                "segmentation": {"size": [48, 64], "counts": [300, 20, 2752]},
            },
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    report = coco_to_yolo(
        tmp_path / "images", tmp_path / "ann.json", tmp_path / "yolo", progress=False
    )
    assert report.crowd == 1
    assert len((tmp_path / "yolo/labels/train/a.txt").read_text().splitlines()) == 1
    yolo_to_coco(tmp_path / "yolo", tmp_path / "back", split="train", progress=False)
    anns = json.loads((tmp_path / "back/annotations.json").read_text())["annotations"]
    crowd = [a for a in anns if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["segmentation"] == coco["annotations"][1]["segmentation"]
    assert crowd[0]["bbox"] == [20, 5, 30, 20]


def test_coco_to_yolo_keeps_other_splits(tmp_path: Path, image_writer: ImageWriter) -> None:
    image_writer(tmp_path / "images/a.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "categories": [{"id": 5, "name": "x"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 5,
                "bbox": [0, 0, 32, 24],
                "area": 768,
                "iscrowd": 0,
            }
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    for split in ("train", "val"):
        coco_to_yolo(
            tmp_path / "images",
            tmp_path / "ann.json",
            tmp_path / "yolo",
            split=split,
            progress=False,
        )
    assert (tmp_path / "yolo/labels/train/a.txt").read_text() == "0 0.25 0.25 0.5 0.5\n"
    assert (tmp_path / "yolo/labels/val/a.txt").is_file()
    assert "val: images/val" in (tmp_path / "yolo/data.yaml").read_text()


def test_coco_to_yolo_bad_input(tmp_path: Path, image_writer: ImageWriter) -> None:
    image_writer(tmp_path / "images/a.png")
    image_writer(tmp_path / "images/b.png")
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "a.png", "width": 64, "height": 48},  # same file
            {"id": 3, "file_name": "missing.png", "width": 64, "height": 48},
        ],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 8, 8], "area": 64},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [0, 0, 8, 8], "area": 64},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    with pytest.raises(DataFormatError, match="image id 2: file_name 'a.png' is also used"):
        coco_to_yolo(tmp_path / "images", tmp_path / "ann.json", tmp_path / "y", progress=False)
    assert not (tmp_path / "y").exists()
    report = coco_to_yolo(
        tmp_path / "images",
        tmp_path / "ann.json",
        tmp_path / "y",
        skip_invalid=True,
        progress=False,
    )
    skipped = " ".join(str(p) for p in report.skipped)
    assert "image id 2" in skipped and "annotation id 2" in skipped and "missing.png" in skipped
    assert report.images == 1 and report.annotations == 1
    coco["categories"].append({"id": 1, "name": "y"})
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    with pytest.raises(DataFormatError, match="duplicate category id"):
        coco_to_yolo(tmp_path / "images", tmp_path / "ann.json", tmp_path / "z", progress=False)


def test_lineage_from_yolo_to_split(make_yolo: YoloFactory, tmp_path: Path) -> None:
    from visionforge.lineage import lineage_chain
    from visionforge_coco.split import split_dataset

    root = make_yolo({f"{i}.png": "0 0.5 0.5 0.2 0.2\n" for i in range(5)})
    yolo_to_coco(root, tmp_path / "coco", split="train", progress=False)
    split_dataset(tmp_path / "coco", tmp_path / "split", ratios=[0.6, 0.4], progress=False)
    chain = lineage_chain(str(tmp_path / "split/val/annotations.json"))
    assert [m.get("operation") for m in chain] == ["split", "yolo2coco", None]
    assert chain[-1] == {
        "id": None,
        "kind": "?",
        "path": str(root / "data.yaml"),
        "missing": True,
    }  # the YOLO source has no manifest


def test_garbage_collector_is_restored(make_yolo: YoloFactory, tmp_path: Path) -> None:
    import gc

    root = make_yolo({"a.png": "0 0.5 0.5 0.2 0.2\n", "b.png": "7 0.5 0.5 0.2 0.2\n"})
    assert gc.isenabled()
    with pytest.raises(DataFormatError, match="class id 7"):
        yolo_to_coco(root, tmp_path / "out", split="train", progress=False)
    assert gc.isenabled()
    gc.disable()
    try:
        yolo_to_coco(root, tmp_path / "out", split="train", skip_invalid=True, progress=False)
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()
