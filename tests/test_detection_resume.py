"""A detector killed (SIGKILL) mid-epoch and resumed ends with the weights, metrics and
history of an uninterrupted run: multi-scale random crops, padded batches, Hungarian loss."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from detection_support import detection_recipe, register
from test_engine_support import SUBPROCESS_ENV, single_thread  # noqa: F401 (autouse fixture)

from visionforge.config import recipe_from_dict
from visionforge.engine import Trainer, load_checkpoint

SUPPORT = Path(__file__).parent / "detection_support.py"
TRAIN = {
    "type": "synthetic_shapes",
    "num_images": 8,
    "shape_size": 48,
    "augment": "train",
    "multiscale": True,
    "scales": [32, 40, 48],
    "crop_scales": [40],
    "crop_size": [24, 40],
    "max_side": 64,
    "pad_to_multiple": 8,
}


def recipe_data(output: Path) -> dict[str, Any]:
    return detection_recipe(
        str(output),
        data={
            "train": TRAIN,
            "val": {"type": "synthetic_shapes", "num_images": 4, "shape_size": 40},
        },
        trainer={"epochs": 2, "batch_size": 2, "checkpoint_every_steps": 1},
        schedule={"type": "cosine", "warmup_steps": 2},
    )


def run(recipe_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SUPPORT), str(recipe_file), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **SUBPROCESS_ENV},
    )


@pytest.mark.slow
def test_detector_resume_after_sigkill_is_bit_exact(tmp_path: Path) -> None:
    register()
    reference = Trainer(recipe_from_dict(recipe_data(tmp_path / "ref"))).fit()
    recipe_file = tmp_path / "run.json"
    recipe_file.write_text(json.dumps(recipe_data(tmp_path / "run")))
    killed = run(recipe_file, "--kill-at", "6")  # epoch 2, step 2 of 4
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last = tmp_path / "run" / "last.ckpt"
    assert load_checkpoint(str(last))["position"]["global_step"] == 5
    resumed = run(recipe_file, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    want, got = load_checkpoint(reference.last_checkpoint), load_checkpoint(str(last))
    assert got["position"] == want["position"]
    for key, value in want["model"].items():
        assert torch.equal(value, got["model"][key]), key
    assert got["metrics"] == want["metrics"] and "val/AP" in got["metrics"]
    assert got["history"] == want["history"]
