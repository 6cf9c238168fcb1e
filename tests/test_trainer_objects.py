"""A Trainer built from objects a user made (no registered components), validate() before
fit(), and the typed hooks seen by plugins."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from visionforge import plugins
from visionforge.components.datasets import SyntheticClassification
from visionforge.components.evaluators import TopKAccuracy
from visionforge.engine.trainer import Trainer
from visionforge.errors import ConfigError, UnknownComponentError
from visionforge.hookspecs import hookimpl
from visionforge.interfaces import TrainerView
from visionforge.registry import REGISTRIES


class TinyNet(nn.Module):
    """Global colour statistics -> class logits: enough for the generated shapes."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, num_classes)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        features = self.head(batch["image"].as_subclass(torch.Tensor)).mean(dim=(2, 3))
        return {"logits": self.fc(features)}

    def export_module(self) -> nn.Module:
        return self


class SquaredError(nn.Module):
    """A loss the registry does not know: mean squared error to one-hot labels."""

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Any]:
        logits = outputs["logits"]
        target = nn.functional.one_hot(batch["label"], logits.shape[1]).float()
        return {"loss": ((logits.softmax(-1) - target) ** 2).mean()}


def trainer(tmp_path: Path, **kwargs: Any) -> Trainer:
    settings = {
        "name": "objects",
        "trainer": {
            "epochs": 2,
            "batch_size": 16,
            "device": "cpu",
            "output": str(tmp_path / "run"),
            "loggers": ["csv"],
        },
        "optimizer": {"type": "adamw", "lr": 0.02, "weight_decay": 0.0},
    }
    return Trainer.from_objects(
        TinyNet(4),
        SyntheticClassification(num_classes=4, num_samples=64, image_size=16),
        val_set=SyntheticClassification(num_classes=4, num_samples=32, image_size=16, seed=1),
        settings=settings,
        **kwargs,
    )


def test_objects_train_and_validate_before_fit(tmp_path: Path) -> None:
    run = trainer(tmp_path, loss=SquaredError(), evaluator=TopKAccuracy(ks=(1,)))
    assert isinstance(run.loss_fn, SquaredError)
    assert run.recipe.model.type == f"object:{__name__}.TinyNet"
    assert run.evaluator is not None and run.evaluator.class_names == run.train_set.class_names
    before = run.validate()
    assert set(before) == {"top1"}
    result = run.fit()
    assert result.metrics["val/top1"] >= before["top1"]
    assert (tmp_path / "run" / "last.ckpt").is_file()
    assert run.validate()["top1"] == pytest.approx(result.metrics["val/top1"])


def test_objects_without_loss_or_evaluator_use_the_recipe_defaults(tmp_path: Path) -> None:
    run = trainer(tmp_path)
    assert run.recipe.loss.type == "cross_entropy" and run.evaluator is None
    assert set(run.validate()) == {"loss"}  # no evaluator: the mean validation loss


def test_validate_without_a_val_set_is_a_clear_error(tmp_path: Path) -> None:
    run = Trainer.from_objects(
        TinyNet(4),
        SyntheticClassification(num_classes=4, num_samples=32, image_size=16),
        settings={"trainer": {"device": "cpu", "output": str(tmp_path / "run")}},
    )
    with pytest.raises(ConfigError, match="data.val: validate\\(\\) needs a validation dataset"):
        run.validate()


def test_the_stored_recipe_of_objects_says_how_to_load_it(tmp_path: Path) -> None:
    run = trainer(tmp_path)
    with pytest.raises(UnknownComponentError, match="was a Python object given to Trainer"):
        REGISTRIES.models.build(run.recipe.model.as_dict(), "model")


def test_hooks_see_a_trainer_view_with_one_based_epochs(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []

    class Recorder:
        @hookimpl
        def visionforge_epoch_end(
            self, trainer: TrainerView, epoch: int, metrics: dict[str, float]
        ) -> None:
            assert isinstance(trainer, TrainerView)
            seen.append((epoch, trainer.position()["global_step"]))

    recorder = Recorder()
    plugins.register_plugin("epoch-recorder", recorder)
    try:
        run = trainer(tmp_path)
        run.fit()
    finally:
        plugins.LOADER.pm.unregister(recorder)
    steps = run.steps_per_epoch
    assert seen == [(1, steps), (2, 2 * steps)]
    step_rows = [row for row in run.history if row["kind"] == "step"]
    assert len(step_rows) == 2 * steps  # a short run logs every step
    assert {row["epoch"] for row in step_rows} == {1, 2}
