"""Teacher -> student training through the core Trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from visionforge.config import recipe_from_dict
from visionforge.engine import Trainer, load_checkpoint
from visionforge_distill.teachers import Teacher


def embedding_gap(trainer: Trainer) -> float:
    """Mean squared student-teacher embedding distance over the training images (clean)."""
    dataset = trainer.val_set
    images = torch.stack([dataset[i]["image"] for i in range(8)]).as_subclass(torch.Tensor)
    trainer.model.eval()
    with torch.no_grad():
        student = trainer.model({"image": images})["embedding"]
        teacher = trainer.frozen.outputs({"image": images})["teacher"]["embedding"]
    trainer.model.train()
    return float(((student - teacher) ** 2).mean())


def test_teacher_stays_frozen_and_out_of_checkpoints_ema_and_optimizer(
    tmp_path: Path, distill_recipe: Any
) -> None:
    data = distill_recipe(tmp_path / "run", trainer={"epochs": 1, "ema": {"decay": 0.5}})
    data["data"].pop("val")
    data.pop("evaluator")
    trainer = Trainer(recipe_from_dict(data))
    (teacher,) = list(trainer.frozen)
    assert isinstance(teacher, Teacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    result = trainer.fit()

    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in teacher.parameters()}
    assert trainer.ema is not None
    assert not any(m is teacher for m in trainer.ema.module.modules())

    ckpt = load_checkpoint(result.last_checkpoint)
    for weights in (ckpt["model"], ckpt["ema"]):
        assert set(weights) == set(trainer.model.state_dict())
        assert not any(k.startswith("backbone.model") for k in weights)  # HF teacher keys
    manifest = json.loads(Path(result.last_checkpoint + ".manifest.json").read_text())
    identity = manifest["frozen"]["teacher"]
    assert identity["name"] == "hf:dinov2" and identity["sha256"] == teacher.identity()["sha256"]
    parents = [p["path"] for p in manifest["parents"]]
    assert identity["path"] in parents  # the teacher's weights are a lineage parent
    assert identity["head"]["prototypes_from"] in parents


@pytest.mark.slow
def test_student_closes_the_embedding_gap_and_retrieves(
    tmp_path: Path, distill_recipe: Any
) -> None:
    recipe = recipe_from_dict(
        distill_recipe(tmp_path / "run", trainer={"epochs": 6}, train={"views": 2})
    )
    trainer = Trainer(recipe)
    gap_before = embedding_gap(trainer)
    result = trainer.fit()
    assert embedding_gap(trainer) < 0.8 * gap_before
    assert {"val/top1", "val/top5", "train/embedding", "train/kl"} <= set(result.metrics)
    assert result.metrics["val/top5"] >= result.metrics["val/top1"]
    # augmented queries against the clean gallery: chance is 1/8 (0.625 measured)
    assert result.metrics["val/top1"] >= 3 / 8


def test_cached_teacher_gives_the_same_losses_as_on_the_fly(
    tmp_path: Path, distill_recipe: Any
) -> None:
    losses = {}
    for name, teacher in (
        ("fly", {}),
        ("cache", {"cache": {"dir": str(tmp_path / "c"), "views": 1}}),
    ):
        data = distill_recipe(
            tmp_path / name,
            teacher=teacher,
            train={"views": 1},
            trainer={"epochs": 2, "csv_log_steps": True, "log_every_steps": 1},
        )
        data["data"].pop("val")
        data.pop("evaluator")
        trainer = Trainer(recipe_from_dict(data))
        trainer.fit()
        losses[name] = [
            (row["train/embedding"], row["train/kl"])
            for row in trainer.history
            if row["kind"] == "step"
        ]
        if name == "cache":
            cache = trainer.frozen.modules[0].cache
            assert cache is not None and (cache.misses, cache.hits) == (8, 8)  # epoch 2: all hits
    assert len(losses["fly"]) == 4
    for fly, cached in zip(losses["fly"], losses["cache"], strict=True):
        assert fly == pytest.approx(cached, rel=1e-5)


@pytest.mark.slow
def test_resume_with_a_teacher_is_exact(tmp_path: Path, distill_recipe: Any) -> None:
    full = Trainer(recipe_from_dict(distill_recipe(tmp_path / "full", trainer={"epochs": 3})))
    full.fit()
    first = Trainer(recipe_from_dict(distill_recipe(tmp_path / "part", trainer={"epochs": 1})))
    first.fit()
    resumed = Trainer(
        recipe_from_dict(distill_recipe(tmp_path / "part", trainer={"epochs": 3})), resume=True
    )
    resumed.fit()
    want = load_checkpoint(str(tmp_path / "full" / "last.ckpt"))["model"]
    got = load_checkpoint(str(tmp_path / "part" / "last.ckpt"))["model"]
    for key, value in want.items():
        assert torch.equal(value, got[key]), key
