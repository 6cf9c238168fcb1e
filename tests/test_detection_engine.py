"""The detection path through the engine: padded batches train and evaluate, predictions
come from the model's postprocess and are mapped into the dataset's label space, loss keys
present only on some steps are averaged over those steps."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from detection_support import detection_recipe, register
from test_engine_support import single_thread, tiny_recipe  # noqa: F401 (autouse fixture)
from torch import nn

import visionforge
from visionforge.config import ComponentConfig, recipe_from_dict
from visionforge.engine import Trainer
from visionforge.engine.averaging import accumulate, global_means
from visionforge.engine.batch import ImagePreparer
from visionforge.engine.evaluation import (
    eval_loader,
    label_map,
    model_label_map,
    run_evaluation,
    to_model_labels,
)
from visionforge.errors import ConfigError
from visionforge.registry import REGISTRIES


@pytest.mark.slow
def test_detector_trains_and_evaluates_on_padded_batches(tmp_path: Path) -> None:
    register()
    data = {
        "train": {
            "type": "synthetic_shapes",
            "num_images": 8,
            "shape_size": 48,
            "multiscale": True,
            "augment": "train",
            "scales": [32, 40, 48],
            "crop_scales": [40],
            "crop_size": [24, 40],
            "max_side": 64,
            "pad_to_multiple": 8,
        }
    }
    data["val"] = {"type": "synthetic_shapes", "num_images": 4, "shape_size": 40, "seed": 1}
    recipe = recipe_from_dict(detection_recipe(str(tmp_path / "run"), data=data))
    result = Trainer(recipe).fit()
    metrics = result.metrics
    assert {"train/loss", "train/loss_ce", "train/loss_bbox", "val/AP", "val/AP50"} <= set(metrics)
    assert 0.0 <= metrics["val/AP"] <= 1.0 and torch.isfinite(torch.tensor(metrics["train/loss"]))


class OracleDetector(nn.Module):
    """Predicts each image's ground truth, labels in a 'raw category id' space: slot c holds
    category c (slot 0 unused), like the official COCO checkpoints."""

    def __init__(self, category_ids: list[int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.category_ids = category_ids
        self.class_names = [str(c) for c in category_ids]
        self.dataset_ids: list[int] = []

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {"unused": self.weight}

    def postprocess(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        results = []
        for target in batch["target"]:
            height, width = target["orig_size"]
            canvas_h, canvas_w = target["size"]
            scale = torch.tensor([width / canvas_w, height / canvas_h] * 2)
            boxes = target["boxes"].as_subclass(torch.Tensor) * scale
            labels = torch.tensor([self.dataset_ids[int(label)] for label in target["labels"]])
            results.append({"boxes": boxes, "scores": torch.ones(len(boxes)), "labels": labels})
        return results

    def export_module(self) -> nn.Module:
        return self


def test_predictions_are_mapped_into_the_dataset_label_space() -> None:
    register()
    dataset = REGISTRIES.datasets.build(
        {"type": "synthetic_shapes", "num_images": 6, "shape_size": 40, "num_classes": 3}
    )
    assert dataset.category_ids == [1, 2, 3]
    model = OracleDetector(category_ids=list(range(5)))  # slots 0..4 = category ids 0..4
    model.dataset_ids = dataset.category_ids  # dataset label c -> model slot c + 1
    mapping = label_map(model, dataset)
    assert mapping is not None and mapping.tolist() == [-1, 0, 1, 2, -1]
    evaluator = REGISTRIES.evaluators.build({"type": "coco_bbox"})
    recipe = recipe_from_dict(detection_recipe("unused"))
    metrics = run_evaluation(
        model,
        eval_loader(dataset, recipe, pin_memory=False),
        torch.device("cpu"),
        evaluator=evaluator,
        loss_fn=lambda o, b: {},
        prepare=ImagePreparer(None, channels_last=False),
        autocast=lambda: torch.autocast("cpu", enabled=False),
        progress=False,
    )
    assert metrics["AP"] == pytest.approx(1.0)
    model.category_ids = [1, 2, 3, 4, 5]  # a wrong label space: every class shifted by one
    evaluator.reset()
    shifted = run_evaluation(
        model,
        eval_loader(dataset, recipe, pin_memory=False),
        torch.device("cpu"),
        evaluator=evaluator,
        loss_fn=lambda o, b: {},
        prepare=ImagePreparer(None, channels_last=False),
        autocast=lambda: torch.autocast("cpu", enabled=False),
        progress=False,
    )
    assert shifted["AP"] < 0.5


def test_means_count_only_the_steps_that_reported_a_key() -> None:
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    accumulate(sums, counts, {"loss": torch.tensor(1.0), "aux": torch.tensor(4.0)})
    accumulate(sums, counts, {"loss": torch.tensor(3.0)})
    assert counts == {"loss": 2, "aux": 1}
    assert global_means(sums, counts, torch.device("cpu")) == {"loss": 2.0, "aux": 4.0}


class SometimesAuxConfig(ComponentConfig):
    pass


class SometimesAux(nn.Module):
    """Cross-entropy, plus an ``aux`` term (the call number) on every second call."""

    def __init__(self, cfg: SometimesAuxConfig) -> None:
        super().__init__()
        self.calls = 0

    def forward(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        self.calls += 1
        loss = nn.functional.cross_entropy(outputs["logits"], batch["label"])
        losses = {"loss": loss}
        if self.calls % 2 == 0:
            losses["aux"] = torch.tensor(float(self.calls))
        return losses


def test_trainer_averages_a_loss_key_over_the_steps_that_had_it(tmp_path: Path) -> None:
    if "detectiontest:sometimes_aux" not in visionforge.losses.loaded_names():
        visionforge.losses.register(
            "sometimes_aux",
            config=SometimesAuxConfig,
            builder=SometimesAux,
            namespace="detectiontest",
        )
    recipe = tiny_recipe(
        tmp_path / "run",
        loss={"type": "sometimes_aux"},
        evaluator=None,
        data={"val": None},
        trainer={"epochs": 1, "log_every_steps": 2},
    )
    trainer = Trainer(recipe)
    result = trainer.fit()
    steps = trainer.steps_per_epoch
    assert steps == 6
    assert result.metrics["train/aux"] == pytest.approx(sum(range(2, steps + 1, 2)) / (steps // 2))
    logged = [row["train/aux"] for row in trainer.history if row["kind"] == "step"]
    assert logged == [2.0, 4.0, 6.0]  # one aux step per logging window of 2 steps


def test_targets_are_mapped_into_a_coco_id_model_label_space() -> None:
    register()
    dataset = REGISTRIES.datasets.build(
        {"type": "synthetic_shapes", "num_images": 2, "shape_size": 32}
    )
    model = REGISTRIES.models.build(
        {"type": "tiny_detector", "num_classes": 5, "category_ids": [0, 1, 2, 3, 4]}
    )
    mapping = model_label_map(model, dataset)
    assert mapping is not None and mapping.tolist() == [1, 2, 3]  # dataset label c -> slot c+1
    batch = dataset.collate_fn([dataset[0], dataset[1]])
    mapped = to_model_labels(batch, mapping)
    for before, after in zip(batch["target"], mapped["target"], strict=True):
        assert after["labels"].tolist() == [label + 1 for label in before["labels"].tolist()]
    narrow = REGISTRIES.models.build(
        {"type": "tiny_detector", "num_classes": 2, "category_ids": [1, 2]}
    )
    with pytest.raises(ConfigError, match=r"no class for the dataset's category ids \[3\]"):
        model_label_map(narrow, dataset)
    plain = REGISTRIES.models.build({"type": "tiny_detector"})
    assert model_label_map(plain, dataset) is None and label_map(plain, dataset) is None
