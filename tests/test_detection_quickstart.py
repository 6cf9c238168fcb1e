"""The detection quickstart (a tiny DINO on generated shapes, the README's main job) learns:
on a seed other than the documented one it still reaches a validation mAP@0.5 no pipeline
demo reaches by chance."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from test_engine_support import single_thread  # noqa: F401 (autouse fixture)

from visionforge.config import load_recipe
from visionforge.engine import Trainer

RECIPE = Path(__file__).parents[1] / "examples" / "detection_quickstart" / "recipe.yaml"

MIN_AP50 = 0.5
"""Final val mAP@0.5 the recipe must reach. Measured with one thread: 0.70 (seed 0) and 0.74
(seed 1, the seed tested: mAP@[.5:.95] 0.57); with two threads 0.72 / 0.69 / 0.74 for seeds
0 / 1 / 2. The recipe before BatchNorm was trained in the trunk reached 0.23 (seed 0) and
0.16 (seed 1) in 384 steps; with it, but stages 2-4 (8x8 down to 1x1 maps for 13-32 px
objects), 0.49."""


@pytest.mark.slow
def test_detection_quickstart_learns_the_shapes(tmp_path: Path) -> None:
    recipe = load_recipe(RECIPE, [f"trainer.output={tmp_path / 'run'}", "trainer.seed=1"])
    result = Trainer(recipe).fit()
    with open(tmp_path / "run" / "metrics.csv") as f:
        evaluated = [row for row in csv.DictReader(f) if row.get("val/AP50")]
    assert [int(row["epoch"]) for row in evaluated] == [5, 10]
    assert result.metrics["val/AP50"] >= MIN_AP50, evaluated
    assert result.metrics["val/AP"] > 0.3, evaluated  # the boxes are tight, not only found
    assert {"val/AP/rectangle", "val/AP/ellipse", "val/AP/triangle"} <= set(result.metrics)
