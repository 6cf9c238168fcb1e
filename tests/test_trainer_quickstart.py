"""The quickstart recipe (timm ResNet-10-T, generated 32 px images) converges whatever the
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

MIN_TOP1 = 0.95
"""Every seed must reach this final val top-1 (4 classes: chance is 0.25). Measured: 1.00 for
seeds 0, 1 and 2 on the 128 val images (and 0, 3, 7 on 64); an epoch in the middle can dip
while the lr is high (seed 1: 0.84 at epoch 3), the last one ends with the lr near 0. 0.95
allows a few misread images; the earlier recipe (ResNet-18, 32 steps) fails it (seed 7:
0.94, 0.81 in an earlier run)."""


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
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
    assert result.metrics["val/top1"] >= MIN_TOP1, f"seed {seed}: {rows}"
    ckpt = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    steps = [row for row in ckpt["history"] if row["kind"] == "step"]
    train = recipe.data.train.as_dict()
    steps_per_epoch = train["num_samples"] // recipe.trainer.batch_size  # drop_last
    assert len(steps) == recipe.trainer.epochs * steps_per_epoch  # a short run logs every step
    assert len({row["lr"] for row in steps}) > 10  # warmup + cosine, not a flat line
    assert (tmp_path / "run" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
