"""The quickstart recipe (timm ResNet-18, generated 32 px images) trains and improves."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from test_engine_support import single_thread  # noqa: F401 (autouse fixture)

from visionforge.config import load_recipe
from visionforge.engine import Trainer

RECIPE = Path(__file__).parents[1] / "examples" / "quickstart" / "recipe.yaml"


@pytest.mark.slow
def test_quickstart_recipe_learns_well_above_chance(tmp_path: Path) -> None:
    recipe = load_recipe(RECIPE, [f"trainer.output={tmp_path / 'run'}", "trainer.device=cpu"])
    result = Trainer(recipe).fit()
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == recipe.trainer.epochs
    assert float(rows[-1]["train/loss"]) < float(rows[0]["train/loss"])
    assert result.metrics["val/top1"] > 0.6  # 4 classes: chance is 0.25
