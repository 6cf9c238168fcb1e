"""A tiny DINO through the training workflow: a run killed (SIGKILL) halfway and resumed ends
bit-identical to an uninterrupted one (the denoising noise comes from the checkpointed RNG),
``visionforge predict`` draws PNGs and writes COCO results, and the ONNX export agrees with
PyTorch in onnxruntime."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from detection_support import TINY_DINO
from PIL import Image
from torchvision.io import decode_png, read_file

import visionforge
from visionforge.cli import main
from visionforge.components.configs import OnnxExporterConfig
from visionforge.config import recipe_from_dict
from visionforge.engine import Trainer, load_checkpoint
from visionforge.export.onnx import OnnxExporter
from visionforge.prediction import MIN_DRAWN_SIDE

LAUNCHER = Path(__file__).resolve().parents[3] / "tests" / "detection_support.py"
"""The core tests' training script (``--kill-at STEP`` SIGKILLs after that step)."""

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def tiny_recipe(output: Path, **trainer: Any) -> dict[str, Any]:
    """Tiny DINO on 8 generated 48 px images (3 classes), batch 2, no augmentation: the
    denoising queries are the only random draw of a training step."""
    shapes = {"type": "synthetic_shapes", "shape_size": 48, "normalize": True}
    return {
        "name": "tinydino",
        "model": TINY_DINO,
        "data": {
            "train": {**shapes, "num_images": 8},
            "val": {**shapes, "num_images": 2, "seed": 1},
            "loader": {"num_workers": 0},
        },
        "loss": {"type": "dino"},
        "evaluator": {"type": "coco_bbox", "plots": False},
        "optimizer": {"type": "adamw", "lr": 1e-3},
        "trainer": {
            "epochs": 1,
            "batch_size": 2,
            "device": "cpu",
            "loggers": ["csv"],
            "log_every_steps": 1,
            "output": str(output),
            **trainer,
        },
    }


def launch(recipe: dict[str, Any], folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    recipe_file = folder / "recipe.json"
    recipe_file.write_text(json.dumps(recipe))
    return subprocess.run(
        [sys.executable, str(LAUNCHER), str(recipe_file), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **ONE_THREAD},
    )


@pytest.mark.slow
@pytest.mark.timeout(2700)  # three CPU-bound processes: minutes where the CPUs are shared
def test_resume_after_sigkill_equals_the_straight_run(tmp_path: Path) -> None:
    straight = launch(tiny_recipe(tmp_path / "straight"), tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    run = tmp_path / "run"
    recipe = tiny_recipe(run, checkpoint_every_steps=1)
    killed = launch(recipe, tmp_path, "--kill-at", "3")  # 4 steps: killed in step 3's end
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert load_checkpoint(str(run / "last.ckpt"))["position"]["global_step"] == 2
    resumed = launch(recipe, tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    want = load_checkpoint(str(tmp_path / "straight" / "last.ckpt"))
    got = load_checkpoint(str(run / "last.ckpt"))
    assert got["position"] == want["position"] and want["position"]["global_step"] == 4
    for key, value in want["model"].items():
        assert torch.equal(value, got["model"][key]), key
    assert "train/loss_bbox_dn" in want["metrics"]  # the denoising queries were trained
    assert got["metrics"] == want["metrics"] and "val/AP" in want["metrics"]
    assert got["history"] == want["history"]


@pytest.fixture(scope="module")
def dino_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    recipe = tiny_recipe(tmp_path_factory.mktemp("run") / "run", max_steps_per_epoch=1)
    recipe["data"]["val"] = None
    recipe["evaluator"] = None
    return Trainer(recipe_from_dict(recipe)).fit().last_checkpoint


@pytest.mark.slow
def test_predict_draws_pngs_and_writes_coco_results(dino_checkpoint: str, tmp_path: Path) -> None:
    sizes = [(40, 56), (64, 48)]
    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in enumerate(sizes):
        pixels = np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"img{i}.png")
    out = tmp_path / "pred"
    argv = ["predict", dino_checkpoint, str(images), "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--score-threshold", "0", "--batch-size", "2"]) == 0
    listed = json.loads((out / "images.json").read_text())
    assert [(i["height"], i["width"]) for i in listed] == sizes
    detections = json.loads((out / "detections.json").read_text())
    assert len(detections) == TINY_DINO["num_select"] * len(sizes)  # threshold 0: every top-k
    assert {d["category_id"] for d in detections} <= {1, 2, 3}  # synthetic_shapes ids
    for det in detections:
        height, width = sizes[det["image_id"] - 1]
        x, y, w, h = det["bbox"]
        assert x >= -1e-3 and y >= -1e-3 and x + w <= width + 1e-3 and y + h <= height + 1e-3
        assert 0 <= det["score"] <= 1
    for i, (height, width) in enumerate(sizes):
        drawn = decode_png(read_file(str(out / f"img{i}.png")))
        original = torch.from_numpy(np.array(Image.open(images / f"img{i}.png"))).permute(2, 0, 1)
        factor = -(-MIN_DRAWN_SIDE // max(height, width))  # small images are drawn enlarged
        enlarged = original.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
        assert drawn.shape == enlarged.shape and not torch.equal(drawn, enlarged)
    assert main([*argv, "--score-threshold", "1.01"]) == 0
    assert json.loads((out / "detections.json").read_text()) == []


ONNX_TOLERANCE = {"scores": 1e-5, "boxes px": 1e-3}
"""float32 onnxruntime vs PyTorch on 48x64 images: both evaluate the same graph, so only
kernel rounding differs (measured max 1e-5 on the raw outputs); labels must be equal."""


@pytest.mark.slow
@pytest.mark.timeout(2700)  # torch.onnx's export takes minutes of CPU where the CPUs are shared
def test_onnx_export_matches_pytorch_in_onnxruntime(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = visionforge.models.build(TINY_DINO).eval()
    height, width = 48, 64
    example = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    artifact = OnnxExporter(OnnxExporterConfig(opset=18)).export(
        model, out=str(tmp_path / "dino.onnx"), example=example
    )
    graph = onnx.load(artifact.path)
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 16
    session = onnxruntime.InferenceSession(artifact.path, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels"]

    images = torch.randn(3, 3, height, width, generator=torch.Generator().manual_seed(1))
    boxes, scores, labels = session.run(None, {"image": images.numpy()})
    k = TINY_DINO["num_select"]
    assert boxes.shape == (3, k, 4) and scores.shape == (3, k) and labels.dtype == np.int64
    with torch.no_grad():
        batch = {"image": images}
        expected = model.postprocess(model(batch), batch)  # the eager path, not the graph's
    for index, want in enumerate(expected):
        np.testing.assert_array_equal(labels[index], want["labels"].numpy())
        np.testing.assert_allclose(
            scores[index], want["scores"].numpy(), atol=ONNX_TOLERANCE["scores"]
        )
        np.testing.assert_allclose(
            boxes[index], want["boxes"].numpy(), atol=ONNX_TOLERANCE["boxes px"]
        )
    with pytest.raises(Exception, match="(?i)dimension|shape|invalid"):  # fixed height/width
        session.run(None, {"image": np.zeros((1, 3, height + 16, width), np.float32)})
