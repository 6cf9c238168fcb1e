"""DDP under torchrun: 2 CPU processes (gloo) x batch B equal 1 process x batch 2B.

For a model without batch statistics (TinyNet has no BatchNorm) the averaged gradient of two
ranks' batches of B is the gradient of their union, so the final weights agree up to float
summation order (documented in docs/engine.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_engine_support import (
    SUBPROCESS_ENV,
    single_thread,  # noqa: F401 (autouse fixture)
    tiny_recipe,
    tiny_recipe_data,
)

from visionforge.engine import Trainer, load_checkpoint

SUPPORT = Path(__file__).parent / "test_engine_support.py"
BLOCKS = {
    "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
    "schedule": {"type": "cosine", "warmup_steps": 2},
    "trainer": {"epochs": 2, "clip_grad_norm": 5.0, "ema": {"decay": 0.9}},
}


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_double_batch(tmp_path: Path) -> None:
    single = Trainer(
        tiny_recipe(
            tmp_path / "one", **{**BLOCKS, "trainer": {**BLOCKS["trainer"], "batch_size": 8}}
        )
    ).fit()
    data = tiny_recipe_data(
        tmp_path / "two", **{**BLOCKS, "trainer": {**BLOCKS["trainer"], "batch_size": 4}}
    )
    recipe_file = tmp_path / "recipe.json"
    recipe_file.write_text(json.dumps(data))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(SUPPORT),
            str(recipe_file),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **SUBPROCESS_ENV},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    one = load_checkpoint(single.last_checkpoint)
    two = load_checkpoint(result["last_checkpoint"])
    assert two["position"] == one["position"] == {"epoch": 2, "step_in_epoch": 0, "global_step": 12}
    assert len(two["rng"]["per_rank"]) == 2
    for part in ("model", "ema"):
        for key, value in one[part].items():
            torch.testing.assert_close(two[part][key], value, rtol=1e-5, atol=1e-6)
    assert result["metrics"]["train/loss"] == pytest.approx(single.metrics["train/loss"], rel=1e-5)
    assert result["metrics"]["val/top1"] == single.metrics["val/top1"]
