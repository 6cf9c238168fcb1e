"""``visionforge resnet loader-bench``: the recipe's own pipeline, measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionforge.cli import main
from visionforge.config import load_recipe
from visionforge.errors import ConfigError
from visionforge_resnet.loader_bench import loader_bench
from visionforge_resnet.tinydata import TinyImageNet, make_tiny_imagenet

EXAMPLE = Path(__file__).parents[3] / "examples" / "resnet50_imagenet" / "recipe.yaml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyImageNet:
    return make_tiny_imagenet(
        tmp_path_factory.mktemp("tiny"), num_classes=2, train_per_class=8, image_size=40
    )


def overrides(tiny: TinyImageNet) -> list[str]:
    return [
        "model.depth=18",
        "model.num_classes=2",
        f"data.train.root={tiny.train}",
        f"data.val.root={tiny.val}",
        "data.train.image_size=32",
        "data.loader.num_workers=0",
        "data.loader.persistent_workers=false",
        "data.mixup=null",
        "trainer.batch_size=4",
        "trainer.precision=fp32",
        "trainer.channels_last=false",
        "trainer.device=cpu",
    ]


def test_cli_measures_the_recipe_pipeline(
    tiny: TinyImageNet, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["resnet", "loader-bench", str(EXAMPLE), "--batches", "6", "--warmup", "1"]
    sets = [item for o in overrides(tiny) for item in ("--set", o)]
    assert main([*args, "--no-model", *sets]) == 0
    out = capsys.readouterr().out
    assert "torch loader, batch 4, 0 workers, 6 timed batches" in out
    rate = float(out.split("data pipeline alone")[1].split()[0])
    assert rate > 0
    assert "training step" not in out  # --no-model


def test_the_dali_backend_is_measured_when_the_recipe_asks(
    tiny: TinyImageNet, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("nvidia.dali")
    args = ["resnet", "loader-bench", str(EXAMPLE), "--batches", "3", "--warmup", "1"]
    sets = [*overrides(tiny), "data.loader.backend=dali", "data.loader.num_workers=2"]
    assert main([*args, "--no-model", *(item for o in sets for item in ("--set", o))]) == 0
    out = capsys.readouterr().out
    assert "dali-cpu loader, batch 4, 2 DALI threads, 3 timed batches" in out
    assert float(out.split("data pipeline alone")[1].split()[0]) > 0


@pytest.mark.slow
def test_with_the_model_it_says_who_waits(tiny: TinyImageNet) -> None:
    recipe = load_recipe(EXAMPLE, overrides(tiny))
    result = loader_bench(recipe, batches=2, warmup=1)
    assert result.model is not None and result.together is not None
    assert result.loader > 0 and result.model > 0 and result.together > 0
    assert ("waits for data" in result.table()) == (result.loader < result.model)


def test_bad_counts_are_refused(tiny: TinyImageNet) -> None:
    recipe = load_recipe(EXAMPLE, overrides(tiny))
    with pytest.raises(ConfigError, match="--batches >= 1"):
        loader_bench(recipe, batches=0)
