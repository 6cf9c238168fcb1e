"""Checkpoint loading: weights_only, clear errors, building models from checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_engine_support import (
    single_thread,  # noqa: F401 (autouse fixture)
    tiny_recipe,
)

from visionforge.engine import Trainer, evaluate, load_checkpoint, load_model
from visionforge.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("ckpt") / "run"
    torch.set_num_threads(1)
    return Trainer(tiny_recipe(out, trainer={"epochs": 1})).fit().last_checkpoint


def test_checkpoint_loads_with_weights_only(trained: str) -> None:
    ckpt = torch.load(trained, weights_only=True)
    assert set(ckpt) >= {
        "format",
        "recipe",
        "model",
        "ema",
        "optimizer",
        "scheduler",
        "scaler",
        "rng",
        "position",
        "metrics",
        "best_metric",
        "class_names",
    }
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch", "cuda"}
    assert load_checkpoint(trained)["recipe"] == ckpt["recipe"]


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothere.ckpt: checkpoint not found"):
        load_checkpoint(str(tmp_path / "nothere.ckpt"))
    with pytest.raises(CheckpointError, match="not a checkpoint file"):
        load_checkpoint(str(tmp_path))
    with pytest.raises(CheckpointError, match="memory://enginetest/none.ckpt: checkpoint not"):
        load_checkpoint("memory://enginetest/none.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.ckpt: not a readable checkpoint"):
        load_checkpoint(str(garbage))


def test_truncated_checkpoint_is_unreadable(trained: str, tmp_path: Path) -> None:
    data = Path(trained).read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.ckpt: not a readable checkpoint"):
        load_checkpoint(str(cut))


def test_foreign_files_are_rejected(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="plain.pt: not a visionforge checkpoint"):
        load_checkpoint(str(plain))
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "visionforge.checkpoint/1", "obj": object()}, unsafe)
    with pytest.raises(CheckpointError, match="unsafe.pt: not a readable checkpoint"):
        load_checkpoint(str(unsafe))


def test_load_model_from_checkpoint_or_recipe(trained: str, tmp_path: Path) -> None:
    model, recipe = load_model(trained)
    assert not model.training
    assert model.class_names == ["class0", "class1", "class2"]
    same, _ = load_model(recipe, trained)
    for key, value in model.state_dict().items():
        assert torch.equal(same.state_dict()[key], value)
    fresh, _ = load_model(recipe)
    assert not torch.equal(fresh.state_dict()["net.5.weight"], model.state_dict()["net.5.weight"])


def test_checkpoint_of_another_model_names_keys_and_shapes(trained: str, tmp_path: Path) -> None:
    wider = tiny_recipe(tmp_path / "w", model={"type": "tiny_net", "width": 16})
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatches .*net\.0\.weight \(8, 3, 3, 3\) "
        r"vs \(16, 3, 3, 3\).*use that recipe",
    ):
        load_model(wider, trained)
    normed = tiny_recipe(tmp_path / "n", model={"type": "tiny_net", "norm": True})
    with pytest.raises(
        CheckpointError,
        match=r"missing keys: net\.4\.bias, net\.4\.weight, "
        r"net\.6\.bias, net\.6\.weight; unexpected keys",
    ):
        load_model(normed, trained)


def test_evaluate_defaults_to_the_outputs_checkpoint(trained: str) -> None:
    recipe = load_checkpoint(trained)["recipe"]
    _, loaded = load_model(trained)
    assert loaded.model_dump(mode="json") == recipe
    metrics = evaluate(loaded)
    assert set(metrics) == {"top1", "top2"}
    assert metrics["top1"] == pytest.approx(load_checkpoint(trained)["metrics"]["val/top1"])
    train_metrics = evaluate(loaded, trained, split="train")
    assert 0.0 <= train_metrics["top1"] <= 1.0


def test_evaluate_without_evaluator_reports_loss_and_needs_val(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path / "run", evaluator=None)
    assert set(evaluate(recipe)) == {"loss"}
    no_val = tiny_recipe(tmp_path / "run", data={"val": None})
    with pytest.raises(ConfigError, match="data.val: evaluation needs a validation dataset"):
        evaluate(no_val)
