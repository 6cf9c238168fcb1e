"""The quickstart recipe (timm ResNet-18, generated 32 px images) converges whatever the
seed, logs every step and plots a schedule worth looking at."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from test_engine_support import single_thread  # noqa: F401 (autouse fixture)

from visionforge.config import load_recipe
from visionforge.engine import Trainer

RECIPE = Path(__file__).parents[1] / "examples" / "quickstart" / "recipe.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 7])
def test_quickstart_recipe_converges_whatever_the_seed(tmp_path: Path, seed: int) -> None:
    recipe = load_recipe(
        RECIPE,
        [f"trainer.output={tmp_path / 'run'}", "trainer.device=cpu", f"trainer.seed={seed}"],
    )
    result = Trainer(recipe).fit()
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == list(range(1, recipe.trainer.epochs + 1))
    assert float(rows[-1]["train/loss"]) < float(rows[0]["train/loss"])
    assert set(result.metrics) >= {"val/top1"} and "val/top5" not in result.metrics
    # 4 classes: chance is 0.25; measured 0.95 and 0.81 with two seeds (not yet >= 0.9 for all)
    assert result.metrics["val/top1"] >= 0.75
    ckpt = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    steps = [row for row in ckpt["history"] if row["kind"] == "step"]
    assert len(steps) == result_steps(recipe.trainer.epochs)  # a short run logs every step
    assert len({row["lr"] for row in steps}) > 10  # warmup + cosine, not a flat line
    assert (tmp_path / "run" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"


def result_steps(epochs: int) -> int:
    return epochs * (256 // 32)  # 256 training images, batches of 32, drop_last
