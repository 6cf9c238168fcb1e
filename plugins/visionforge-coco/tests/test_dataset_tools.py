"""split, verify (+ --fix), stats, datasets with transforms v2, and the CLI group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from visionforge.cli import main
from visionforge.registry import REGISTRIES
from visionforge_coco.datasets import CocoDetection, YoloDetection
from visionforge_coco.split import assign_splits, split_dataset
from visionforge_coco.synthetic import ShapesSpec, write_synthetic
from visionforge_coco.verify import fix_coco, verify_coco


@pytest.fixture
def coco_set(tmp_path: Path) -> Path:
    return write_synthetic(
        tmp_path / "coco", ShapesSpec(num_images=10, image_size=48, seed=1), "coco", progress=False
    )


def test_split_reproducible_exact_counts(coco_set: Path, tmp_path: Path) -> None:
    a = split_dataset(coco_set, tmp_path / "a", progress=False)
    split_dataset(coco_set, tmp_path / "b", progress=False)
    assert a.counts == {"train": 7, "val": 2, "test": 1}
    for name in ("train", "val", "test"):
        ids_a = [
            i["id"]
            for i in json.loads((tmp_path / f"a/{name}/annotations.json").read_text())["images"]
        ]
        ids_b = [
            i["id"]
            for i in json.loads((tmp_path / f"b/{name}/annotations.json").read_text())["images"]
        ]
        assert ids_a == ids_b
    assert sum(a.annotations.values()) == len(
        json.loads((coco_set / "annotations.json").read_text())["annotations"]
    )


def test_split_groups_and_stratify() -> None:
    images = [{"id": i, "video": i // 4} for i in range(40)]
    labels = {i: {1 + (i % 5 == 0)} for i in range(40)}
    split = assign_splits(images, labels, [0.5, 0.5], seed=1, group_by="video")
    for video in range(10):
        assert len({split[i] for i in range(40) if images[i]["video"] == video}) == 1
    strat = assign_splits(images, labels, [0.5, 0.5], seed=1, stratify=True)
    rare = [strat[i] for i in range(40) if 2 in labels[i]]
    assert sorted(rare) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert strat.count(0) == 20
    assert assign_splits(images, labels, [0.5, 0.5], seed=1) == assign_splits(
        images, labels, [0.5, 0.5], seed=1
    )


def test_verify_finds_each_problem_and_fix(coco_set: Path, tmp_path: Path) -> None:
    data = json.loads((coco_set / "annotations.json").read_text())
    data["images"][0]["width"] = 99  # size mismatch
    data["images"][1]["file_name"] = "../escape.png"
    data["annotations"][0]["bbox"][0] = -20.0  # outside the image
    data["annotations"][1]["id"] = data["annotations"][2]["id"]  # duplicate id
    data["annotations"][3]["category_id"] = 42  # unknown category
    data["annotations"][4]["image_id"] = 4242  # unknown image
    data["images"].append({**data["images"][5], "id": 999})  # same file as image id 6
    (coco_set / "images/000002.png").write_bytes(b"broken")
    whole = (coco_set / "images/000003.png").read_bytes()
    (coco_set / "images/000003.png").write_bytes(whole[: len(whole) // 2])  # truncated
    (coco_set / "annotations.json").write_text(json.dumps(data))
    report = verify_coco(coco_set / "annotations.json", coco_set / "images", progress=False)
    text = "\n".join(str(p) for p in report.problems)
    assert "image id 4: " in text  # the truncated file
    assert "image id 999: file_name '000005.png' is also used by image id 6" in text
    for needle in (
        "size in JSON 99x48",
        "relative path",
        "reaches outside",
        "duplicate annotation id",
        "category_id 42",
        "image_id 4242",
        "cannot decode",
    ):
        assert needle in text, needle
    fix = fix_coco(
        coco_set / "annotations.json", coco_set / "images", tmp_path / "fixed", progress=False
    )
    assert fix.changes
    assert verify_coco(
        tmp_path / "fixed/annotations.json", tmp_path / "fixed/images", progress=False
    ).ok
    changes = json.loads((tmp_path / "fixed/fix_report.json").read_text())["changes"]
    assert len(changes) == len(fix.changes)


@pytest.mark.slow  # builds the full CLI (loads every plugin)
def test_cli_exit_codes_and_eval(
    coco_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["coco", "verify", str(coco_set)]) == 0
    data = json.loads((coco_set / "annotations.json").read_text())
    bad = {**data, "annotations": [{**data["annotations"][0], "category_id": 77}]}
    (tmp_path / "bad_cat.json").write_text(json.dumps(bad))
    (tmp_path / "images").symlink_to(coco_set / "images")
    assert main(["coco", "verify", str(tmp_path / "bad_cat.json")]) == 1
    assert "category_id 77" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text('{"images": [')
    assert main(["coco", "verify", str(tmp_path / "bad.json")]) == 2
    assert "bad.json:1:" in capsys.readouterr().out
    data = json.loads((coco_set / "annotations.json").read_text())
    dets = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 0.5,
        }
        for a in data["annotations"]
    ]
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    code = main(
        [
            "coco",
            "eval",
            "--gt",
            str(coco_set / "annotations.json"),
            "--dt",
            str(tmp_path / "dt.json"),
            "--out",
            str(tmp_path / "ev"),
            "--no-plots",
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert metrics["AP"] == pytest.approx(1.0) and metrics["F1"] == pytest.approx(1.0)
    assert main(["coco", "stats", str(coco_set), "--out", str(tmp_path / "st")]) == 0
    assert (tmp_path / "st/stats.png").is_file()
    stats = json.loads((tmp_path / "st/stats.json").read_text())
    assert stats["annotations"] == len(data["annotations"])


def test_coco_dataset_items_transforms_and_collate(coco_set: Path) -> None:
    ds = REGISTRIES.datasets.build(
        {
            "type": "coco",
            "images": f"file://{coco_set / 'images'}",  # fsspec URLs work too
            "annotations": str(coco_set / "annotations.json"),
            "image_size": 96,
            "masks": True,
        }
    )
    item = ds[0]
    boxes = item["target"]["boxes"]
    assert isinstance(item["image"], tv_tensors.Image) and item["image"].shape == (3, 96, 96)
    assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.canvas_size == (96, 96)
    raw = CocoDetection(str(coco_set / "images"), str(coco_set / "annotations.json"))[0]
    torch.testing.assert_close(boxes, raw["target"]["boxes"] * 2)
    assert item["target"]["masks"].shape[0] == len(item["target"]["labels"])
    assert item["target"]["orig_size"].tolist() == [48, 48]
    flipped = v2.RandomHorizontalFlip(p=1.0)(raw)
    assert flipped["target"]["boxes"][0, 2] == 48 - raw["target"]["boxes"][0, 0]
    batch = ds.collate_fn([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 96, 96) and len(batch["target"]) == 2
    assert ds.num_classes == 3 and ds.category_ids == [1, 2, 3]


def test_yolo_and_synthetic_datasets_agree(tmp_path: Path) -> None:
    spec = ShapesSpec(num_images=3, image_size=40, seed=5)
    root = write_synthetic(tmp_path / "y", spec, "yolo", progress=False)
    yolo = YoloDetection(str(root), "train")
    synthetic = REGISTRIES.datasets.build(
        {"type": "synthetic_shapes", "num_images": 3, "shape_size": 40, "seed": 5}
    )
    for i in range(3):
        torch.testing.assert_close(yolo[i]["target"]["boxes"], synthetic[i]["target"]["boxes"])
        assert yolo[i]["target"]["labels"].tolist() == synthetic[i]["target"]["labels"].tolist()
    assert torch.equal(synthetic[1]["image"], synthetic[1]["image"])  # deterministic


def test_load_errors_name_file_and_id(tmp_path: Path) -> None:
    from visionforge_coco.cocofile import load_coco
    from visionforge_coco.problems import DataFormatError

    base = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 4, "height": 4},
            {"id": 1, "file_name": "/abs/b.png", "width": 4, "height": 4},
        ],
        "categories": [],
        "annotations": [],
    }
    (tmp_path / "a.json").write_text(json.dumps(base))
    with pytest.raises(DataFormatError, match=r"a.json: image id 1: duplicate image id"):
        load_coco(tmp_path / "a.json")
    base["images"].pop()
    base["images"][0]["file_name"] = "/abs/a.png"
    (tmp_path / "a.json").write_text(json.dumps(base))
    with pytest.raises(DataFormatError, match=r"image id 1: file_name '/abs/a.png' must be"):
        load_coco(tmp_path / "a.json")
    base["images"][0]["file_name"] = "a.png"
    base["annotations"] = [{"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]
    (tmp_path / "a.json").write_text(json.dumps(base))
    with pytest.raises(DataFormatError, match=r"annotation id 9: category_id 1 is not in"):
        load_coco(tmp_path / "a.json")
    (tmp_path / "a.json").write_text(json.dumps(base)[:-10])
    with pytest.raises(DataFormatError, match=r"a.json:1:\d+: invalid JSON"):
        load_coco(tmp_path / "a.json")


def test_verify_yolo_root_and_converter_registry(tmp_path: Path) -> None:
    from visionforge_coco.verify import verify_dataset

    root = write_synthetic(
        tmp_path / "y", ShapesSpec(num_images=3, image_size=32), "yolo", progress=False
    )
    assert verify_dataset(root, progress=False).ok
    (root / "labels/train/000001.txt").write_text("0 0.5 0.5 0.2\n")
    problems = verify_dataset(root, progress=False).problems
    assert len(problems) == 1 and "000001.txt:1" in str(problems[0])
    (root / "labels/train/000001.txt").write_text("")
    report = REGISTRIES.converters.build(
        {"type": "yolo2coco", "src": str(root), "dst": str(tmp_path / "c"), "split": "train"}
    )
    assert report.images == 3 and (tmp_path / "c/annotations.json").is_file()
