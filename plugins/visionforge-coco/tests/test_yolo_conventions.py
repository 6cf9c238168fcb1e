"""Ultralytics conventions: images without a label file are background images, and one
label file may mix box rows and polygon rows."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from visionforge.registry import REGISTRIES
from visionforge_coco.cli import add_coco_commands
from visionforge_coco.convert import coco_to_yolo, yolo_to_coco
from visionforge_coco.datasets import YoloDetection
from visionforge_coco.problems import DataFormatError
from visionforge_coco.verify import verify_dataset

YoloFactory = Callable[..., Path]

BOX = "1 0.5 0.5 0.25 0.5\n"
TRIANGLE = "0 0.25 0.25 0.5 0.25 0.75 0.75\n"


@pytest.fixture
def with_background(make_yolo: YoloFactory) -> Path:
    """a.png has a box, empty.png an empty label file, nolabel.png no label file."""
    return make_yolo({"a.png": BOX, "empty.png": "", "nolabel.png": None})


def test_convert_keeps_images_without_label_file_and_counts_them(
    with_background: Path, tmp_path: Path
) -> None:
    report = yolo_to_coco(with_background, tmp_path / "out", split="train", progress=False)
    coco = json.loads((tmp_path / "out/annotations.json").read_text())
    names = [img["file_name"] for img in coco["images"]]
    assert names == ["a.png", "empty.png", "nolabel.png"]
    assert [a["image_id"] for a in coco["annotations"]] == [1]
    assert (report.images, report.background, report.without_label_file) == (3, 2, 1)
    written = json.loads((tmp_path / "out/conversion_report.json").read_text())
    assert (written["background"], written["without_label_file"]) == (2, 1)
    assert not written["skipped"]
    assert "2 background, 1 without a label file" in report.summary()


def test_strict_labels_keeps_the_error(with_background: Path, tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"nolabel.png: image without a label file"):
        yolo_to_coco(
            with_background, tmp_path / "out", split="train", strict_labels=True, progress=False
        )
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataFormatError, match=r"nolabel.png: image without a label file"):
        REGISTRIES.datasets.build(
            {"type": "yolo", "root": str(with_background), "strict_labels": True}
        )
    report = verify_dataset(with_background, progress=False, strict_labels=True)
    assert [p.where for p in report.problems] == [str(with_background / "images/train/nolabel.png")]


def test_label_file_without_image_stays_an_error(make_yolo: YoloFactory, tmp_path: Path) -> None:
    root = make_yolo({"a.png": BOX}, extra_labels={"ghost.txt": BOX})
    with pytest.raises(DataFormatError, match=r"ghost.txt: label file without an image"):
        yolo_to_coco(root, tmp_path / "out", split="train", progress=False)
    with pytest.raises(DataFormatError, match=r"ghost.txt: label file without an image"):
        YoloDetection(str(root))
    (problem,) = verify_dataset(root, progress=False).problems
    assert problem.where.endswith("ghost.txt")


def test_yolo_dataset_background_item_has_no_objects(with_background: Path) -> None:
    dataset = REGISTRIES.datasets.build({"type": "yolo", "root": str(with_background)})
    assert len(dataset) == 3
    counts = [len(dataset[i]["target"]["labels"]) for i in range(3)]
    assert counts == [1, 0, 0]
    assert dataset[2]["target"]["boxes"].shape == (0, 4)


def test_verify_counts_background_images(with_background: Path) -> None:
    report = verify_dataset(with_background, progress=False)
    assert report.ok
    assert report.counts["background images"] == 2
    assert report.counts["without a label file"] == 1
    assert "2 background images, 1 without a label file" in report.format()


def test_mixed_rows_each_read_as_what_it_is(make_yolo: YoloFactory, tmp_path: Path) -> None:
    root = make_yolo({"a.png": BOX + TRIANGLE + BOX.replace("0.5 0.5", "0.25 0.75")})
    report = yolo_to_coco(root, tmp_path / "coco", split="train", progress=False)
    assert report.annotations == 3 and not report.skipped
    box, polygon, second_box = json.loads((tmp_path / "coco/annotations.json").read_text())[
        "annotations"
    ]
    assert "segmentation" not in box and "segmentation" not in second_box
    assert box["bbox"] == [24.0, 12.0, 16.0, 24.0] and second_box["bbox"] == [8.0, 24.0, 16.0, 24.0]
    assert polygon["segmentation"] == [[16.0, 12.0, 32.0, 12.0, 48.0, 36.0]]
    assert polygon["bbox"] == [16.0, 12.0, 32.0, 24.0]
    assert polygon["category_id"] == 1 and box["category_id"] == 2

    boxes = YoloDetection(str(root))[0]["target"]["boxes"].tolist()
    assert boxes == [[24.0, 12.0, 40.0, 36.0], [16.0, 12.0, 48.0, 36.0], [8.0, 24.0, 24.0, 48.0]]
    assert verify_dataset(root, progress=False).ok


def test_coco2yolo_auto_rows_of_mixed_annotations_are_boxes(
    make_yolo: YoloFactory, tmp_path: Path
) -> None:
    """``--rows auto`` writes polygons only when every object has one, as documented."""
    root = make_yolo({"a.png": BOX + TRIANGLE})
    yolo_to_coco(root, tmp_path / "coco", split="train", progress=False)
    images, annotations = tmp_path / "coco/images", tmp_path / "coco/annotations.json"
    coco_to_yolo(images, annotations, tmp_path / "auto", progress=False)
    rows = (tmp_path / "auto/labels/train/a.txt").read_text().splitlines()
    assert rows == ["1 0.5 0.5 0.25 0.5", "0 0.5 0.5 0.5 0.5"]  # the triangle's extent
    report = coco_to_yolo(images, annotations, tmp_path / "poly", rows="polygon", progress=False)
    rows = (tmp_path / "poly/labels/train/a.txt").read_text().splitlines()
    assert [len(r.split()) for r in rows] == [9, 7]  # box-shaped polygon, triangle
    assert [n.message for n in report.notes] == ["no polygon: written as a box-shaped polygon"]


def _coco_command(args: list[str]) -> int:
    """Run ``visionforge coco ARGS`` through the plugin's parser (without loading every
    plugin, which the slow CLI test does)."""
    parser = argparse.ArgumentParser()
    add_coco_commands(parser.add_subparsers())
    parsed = parser.parse_args(["coco", *args])
    return int(parsed.func(parsed))


def test_cli_background_counts_and_strict_labels(
    with_background: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out")
    assert (
        _coco_command(["convert", str(with_background), out, "--from", "yolo", "--to", "coco"]) == 0
    )
    assert "2 background, 1 without a label file" in capsys.readouterr().out
    with pytest.raises(DataFormatError, match="nolabel.png: image without a label file"):
        _coco_command(
            [
                "convert",
                str(with_background),
                out,
                "--from",
                "yolo",
                "--to",
                "coco",
                "--strict-labels",
            ]
        )
    assert _coco_command(["verify", str(with_background)]) == 0
    printed = capsys.readouterr().out
    assert "2 background images, 1 without a label file" in printed and "verify: OK" in printed
    assert _coco_command(["verify", str(with_background), "--strict-labels"]) == 1
    assert "nolabel.png: image without a label file" in capsys.readouterr().out
