"""Frozen auxiliary modules (a teacher): outside the model, checkpoint, EMA and optimizer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import Field
from test_engine_support import NAMESPACE, single_thread, tiny_recipe  # noqa: F401
from torch import nn

import visionforge
from visionforge.config import ComponentConfig, InputPath
from visionforge.engine import Trainer, load_checkpoint
from visionforge.engine.frozen import FrozenModules
from visionforge.errors import ConfigError


class TinyTeacherConfig(ComponentConfig):
    weights: InputPath | None = None
    classes: int = 3
    extra: dict[str, Any] = Field(default_factory=dict)


class TinyTeacher(nn.Module):
    """conv -> BatchNorm -> dropout -> pool -> linear: train mode would change its outputs
    (dropout) and its BatchNorm statistics."""

    output_key = "teacher"

    def __init__(self, cfg: TinyTeacherConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.Dropout(0.5),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, cfg.classes),
        )
        self.weights = cfg.weights
        if cfg.weights is not None:
            self.load_state_dict(torch.load(cfg.weights, weights_only=True))

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {"logits": self.net(batch["image"].as_subclass(torch.Tensor))}

    def identity(self) -> dict[str, Any]:
        sha = hashlib.sha256(Path(self.weights).read_bytes()).hexdigest() if self.weights else None
        return {"name": "tiny_teacher", "path": self.weights, "sha256": sha}


class MatchTeacherConfig(ComponentConfig):
    pass


class MatchTeacher:
    """Cross-entropy plus a product with the teacher's logits (autograd saves them)."""

    def __init__(self, cfg: MatchTeacherConfig) -> None:
        self.cfg = cfg

    def __call__(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Any]:
        teacher = outputs["teacher"]["logits"]
        ce = nn.functional.cross_entropy(outputs["logits"], batch["label"])
        match = -(outputs["logits"].log_softmax(-1) * teacher.softmax(-1)).sum(-1).mean()
        return {"loss": ce + match, "ce": ce, "match": match}


def register() -> None:
    if f"{NAMESPACE}:tiny_teacher" in visionforge.models.loaded_names():
        return
    visionforge.models.register(
        "tiny_teacher", config=TinyTeacherConfig, builder=TinyTeacher, namespace=NAMESPACE
    )
    visionforge.losses.register(
        "match_teacher", config=MatchTeacherConfig, builder=MatchTeacher, namespace=NAMESPACE
    )


@pytest.fixture
def teacher_weights(tmp_path: Path) -> Path:
    torch.manual_seed(7)
    net = TinyTeacher(TinyTeacherConfig())
    path = tmp_path / "teacher.pt"
    torch.save(net.state_dict(), path)
    (tmp_path / "teacher.pt.manifest.json").write_text(
        json.dumps({"id": "checkpoint-teacher", "kind": "checkpoint"})
    )
    return path


def teacher_recipe(output: Path, weights: Path, **blocks: Any) -> Any:
    register()
    return tiny_recipe(
        output,
        teacher={"type": "tiny_teacher", "weights": str(weights), "extra": {"w": str(weights)}},
        loss={"type": "match_teacher"},
        **blocks,
    )


def test_teacher_is_frozen_and_kept_out_of_checkpoint_ema_and_optimizer(
    tmp_path: Path, teacher_weights: Path
) -> None:
    recipe = teacher_recipe(tmp_path / "run", teacher_weights, trainer={"ema": {"decay": 0.9}})
    trainer = Trainer(recipe)
    (teacher,) = list(trainer.frozen)
    assert isinstance(teacher, TinyTeacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer.fit()

    assert not teacher.training
    for name, param in teacher.named_parameters():
        assert not param.requires_grad and param.grad is None, name
    for key, value in teacher.state_dict().items():  # BatchNorm statistics included
        assert torch.equal(value, before[key]), key
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in teacher.parameters()}
    assert trainer.ema is not None
    assert not any(m is teacher for m in trainer.ema.module.modules())

    ckpt = load_checkpoint(str(tmp_path / "run" / "last.ckpt"))
    model_keys = set(trainer.model.state_dict())
    assert set(ckpt["model"]) == model_keys == set(ckpt["ema"])

    manifest = json.loads((tmp_path / "run" / "last.ckpt.manifest.json").read_text())
    identity = manifest["frozen"]["teacher"]
    assert identity["sha256"] == hashlib.sha256(teacher_weights.read_bytes()).hexdigest()
    parents = [p["path"] for p in manifest["parents"]]
    assert parents == [str(teacher_weights)]  # a nested path is one parent, found once
    assert manifest["parents"][0]["id"] == "checkpoint-teacher"
    run_manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert run_manifest["frozen"] == manifest["frozen"]


def test_teacher_stays_in_eval_mode_and_runs_under_no_grad_not_inference(
    tmp_path: Path, teacher_weights: Path
) -> None:
    trainer = Trainer(teacher_recipe(tmp_path / "run", teacher_weights))
    trainer.train_model.train()
    (teacher,) = list(trainer.frozen)
    teacher.train()  # someone switched it: the next call puts it back
    batch = {"image": torch.rand(4, 3, 16, 16), "label": torch.tensor([0, 1, 2, 0])}
    first = trainer.frozen.outputs(batch)["teacher"]["logits"]
    second = trainer.frozen.outputs(batch)["teacher"]["logits"]
    assert not teacher.training
    assert torch.equal(first, second)  # dropout off
    assert not first.requires_grad and not first.is_inference()

    student = torch.randn(4, 3, requires_grad=True)
    (student * first).sum().backward()  # an inference tensor could not be saved for backward
    assert torch.equal(student.grad, first)

    losses = trainer.loss_fn(trainer.train_model(batch), batch)
    assert set(losses) == {"loss", "ce", "match"}
    losses["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_runs_in_the_run_autocast(tmp_path: Path, teacher_weights: Path) -> None:
    trainer = Trainer(
        teacher_recipe(tmp_path / "run", teacher_weights, trainer={"precision": "bf16"})
    )
    out = trainer.frozen.outputs({"image": torch.rand(2, 3, 16, 16)})
    assert out["teacher"]["logits"].dtype == torch.bfloat16


def test_a_model_that_is_not_frozen_module_is_a_clear_error(tmp_path: Path) -> None:
    register()
    recipe = tiny_recipe(tmp_path / "run", teacher={"type": "tiny_net"})
    with pytest.raises(ConfigError, match=r"teacher\.type: 'tiny_net' builds a TinyNet"):
        Trainer(recipe)


def test_output_key_clash_is_a_clear_error(tmp_path: Path, teacher_weights: Path) -> None:
    register()
    frozen = FrozenModules([TinyTeacher(TinyTeacherConfig())], torch.device("cpu"))
    loss = frozen.feeding(MatchTeacher(MatchTeacherConfig()))
    batch = {"image": torch.rand(2, 3, 16, 16), "label": torch.tensor([0, 1])}
    with pytest.raises(ConfigError, match="already returns outputs"):
        loss({"logits": torch.zeros(2, 3), "teacher": {}}, batch)


def test_teacher_block_changes_the_recipe_hash(tmp_path: Path, teacher_weights: Path) -> None:
    plain = tiny_recipe(tmp_path / "run")
    with_teacher = teacher_recipe(tmp_path / "run", teacher_weights)
    assert plain.sha256() != with_teacher.sha256()
