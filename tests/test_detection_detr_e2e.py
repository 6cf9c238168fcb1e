"""End to end with a tiny DETR (visionforge-dino): train on multi-scale padded batches with
COCO evaluation, predict on a folder (PNGs + COCO results JSON), export ONNX (parity)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from PIL import Image
from test_engine_support import single_thread  # noqa: F401 (autouse fixture)

from visionforge.cli import main
from visionforge.config import recipe_from_dict
from visionforge.engine import Trainer

pytest.importorskip("visionforge_dino")

TINY_DETR = {
    "type": "detr_r50",
    "backbone": "resnet18",
    "hidden_dim": 16,
    "nheads": 2,
    "enc_layers": 1,
    "dec_layers": 2,
    "dim_feedforward": 32,
    "num_queries": 5,
    "num_classes": 3,
}
MULTISCALE = {
    "multiscale": True,
    "scales": [48, 56, 64],
    "crop_scales": [48],
    "crop_size": [32, 48],
    "eval_size": 64,
    "max_side": 96,
    "pad_to_multiple": 32,
}


@pytest.mark.slow
def test_tiny_detr_trains_evaluates_predicts_and_exports(tmp_path: Path) -> None:
    recipe = recipe_from_dict(
        {
            "name": "tinydetr",
            "model": TINY_DETR,
            "data": {
                "train": {
                    "type": "synthetic_shapes",
                    "num_images": 4,
                    "shape_size": 64,
                    "augment": "train",
                    **MULTISCALE,
                },
                "val": {
                    "type": "synthetic_shapes",
                    "num_images": 3,
                    "shape_size": 64,
                    "augment": "eval",
                    "seed": 1,
                    **MULTISCALE,
                },
                "normalize_on_device": [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]],
            },
            "loss": {"type": "detr"},
            "evaluator": {"type": "coco_bbox"},
            "optimizer": {"type": "adamw", "lr": 1e-4},
            "trainer": {
                "epochs": 1,
                "batch_size": 2,
                "device": "cpu",
                "loggers": ["csv"],
                "output": str(tmp_path / "run"),
            },
        }
    )
    result = Trainer(recipe).fit()
    assert {"train/loss", "val/AP", "val/F1"} <= set(result.metrics)
    checkpoint = result.last_checkpoint

    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in enumerate([(60, 80), (72, 50)]):
        pixels = np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"p{i}.jpg")
    out = tmp_path / "pred"
    argv = ["predict", checkpoint, str(images), "--out", str(out), "--score-threshold", "0"]
    assert main([*argv, "--device", "cpu"]) == 0
    detections = json.loads((out / "detections.json").read_text())
    assert len(detections) == 2 * 5 and {d["category_id"] for d in detections} <= {1, 2, 3}
    assert (out / "p0.png").is_file() and (out / "p1.png").is_file()

    onnx_path = tmp_path / "detr.onnx"
    # DETR's export graph specializes the batch axis to the example's (reported to
    # visionforge-dino): export a fixed batch of one, with the parity check on
    size = ["--set", "export.input_size=[3,64,64]", "--set", "export.dynamic_batch=false"]
    assert main(["export", checkpoint, "--out", str(onnx_path), *size]) == 0
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels"]
    boxes, scores, labels = session.run(None, {"image": np.zeros((1, 3, 64, 64), np.float32)})
    assert boxes.shape == (1, 5, 4) and scores.shape == (1, 5) and labels.shape == (1, 5)
