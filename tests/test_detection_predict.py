"""``visionforge predict`` for a detector: a PNG per image with the boxes drawn, a COCO
results JSON in the training data's category ids, folder input, score threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from detection_support import detection_recipe, register
from PIL import Image
from test_engine_support import single_thread  # noqa: F401 (autouse fixture)
from torchvision.io import decode_png, read_file

from visionforge.cli import main
from visionforge.config import recipe_from_dict
from visionforge.engine import Trainer
from visionforge.prediction import MIN_DRAWN_SIDE


@pytest.fixture(scope="module")
def detector_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    register()
    out = tmp_path_factory.mktemp("run")
    data = {"val": None}
    recipe = detection_recipe(
        str(out / "run"), data=data, trainer={"max_steps_per_epoch": 1}, evaluator=None
    )
    return Trainer(recipe_from_dict(recipe)).fit().last_checkpoint


def write_images(folder: Path) -> list[tuple[int, int]]:
    sizes = [(40, 56), (64, 32), (48, 48)]
    folder.mkdir()
    for i, (h, w) in enumerate(sizes):
        pixels = torch.randint(0, 255, (h, w, 3), generator=torch.Generator().manual_seed(i))
        Image.fromarray(pixels.to(torch.uint8).numpy()).save(folder / f"img{i}.png")
    return sizes


def test_predict_draws_pngs_and_writes_coco_results(
    detector_checkpoint: str, tmp_path: Path
) -> None:
    sizes = write_images(tmp_path / "images")
    out = tmp_path / "pred"
    argv = ["predict", detector_checkpoint, str(tmp_path / "images"), "--out", str(out)]
    assert main([*argv, "--score-threshold", "0", "--batch-size", "2", "--device", "cpu"]) == 0
    images = json.loads((out / "images.json").read_text())
    assert [(i["height"], i["width"]) for i in images] == sizes
    detections = json.loads((out / "detections.json").read_text())
    assert len(detections) == 6 * len(sizes)  # threshold 0 keeps every query
    assert {d["category_id"] for d in detections} <= {1, 2, 3}  # synthetic_shapes ids, not 0..2
    for det in detections:
        height, width = sizes[det["image_id"] - 1]
        x, y, w, h = det["bbox"]
        assert x >= -1e-3 and x + w <= width + 1e-3 and y >= -1e-3 and y + h <= height + 1e-3
    for i, (height, width) in enumerate(sizes):
        drawn = decode_png(read_file(str(out / f"img{i}.png")))
        pixels = np.array(Image.open(tmp_path / "images" / f"img{i}.png"))
        original = torch.from_numpy(pixels).permute(2, 0, 1)
        factor = -(-MIN_DRAWN_SIDE // max(height, width))  # small images are drawn enlarged
        enlarged = original.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
        assert drawn.shape == (3, height * factor, width * factor)
        same = (drawn == enlarged).all(dim=0).float().mean()
        assert 0.2 < same < 1  # boxes and labels drawn over the enlarged image
    assert main([*argv, "--score-threshold", "1.01", "--device", "cpu"]) == 0
    assert json.loads((out / "detections.json").read_text()) == []


def test_predict_reads_an_s3_prefix_and_writes_to_s3(
    detector_checkpoint: str, tmp_path: Path, s3_bucket: str
) -> None:
    import fsspec

    sizes = write_images(tmp_path / "images")
    fs = fsspec.filesystem("s3")
    for i in range(len(sizes)):
        fs.put_file(str(tmp_path / "images" / f"img{i}.png"), f"{s3_bucket}/in/img{i}.png")
    out = f"{s3_bucket}/pred"
    argv = ["predict", detector_checkpoint, f"{s3_bucket}/in/", "--out", out, "--device", "cpu"]
    assert main([*argv, "--score-threshold", "0"]) == 0
    fs.invalidate_cache()
    images = json.loads(fs.cat_file(f"{out}/images.json"))
    assert [i["file_name"] for i in images] == [f"{s3_bucket}/in/img{i}.png" for i in range(3)]
    assert len(json.loads(fs.cat_file(f"{out}/detections.json"))) == 6 * len(sizes)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(out)) == [
        "detections.json",
        "images.json",
        "img0.png",
        "img1.png",
        "img2.png",
    ]
