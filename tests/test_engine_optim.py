"""Parameter groups, lr scaling and the schedule's values against their arithmetic."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine_support import (
    single_thread,  # noqa: F401 (autouse fixture)
    tiny_recipe,
)
from torch import nn

from visionforge.config import AdamWConfig, ParamGroupRule, ScheduleConfig, SGDConfig
from visionforge.engine import Trainer
from visionforge.engine.optim import build_optimizer, build_scheduler, param_groups


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def groups_by_param(groups: list[dict]) -> dict[str, tuple[float, float]]:
    return {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["param_names"]}


def test_param_groups_first_matching_rule_wins_and_norm_bias_skip_decay() -> None:
    cfg = SGDConfig(
        lr=0.1,
        weight_decay=1e-4,
        no_decay_norm_and_bias=True,
        param_groups=[
            ParamGroupRule(pattern="backbone.*", lr_mult=0.1),
            ParamGroupRule(pattern="*", lr_mult=2.0, weight_decay=5e-4),
        ],
    )
    got = groups_by_param(param_groups(Net(), cfg, base_lr=0.1))
    assert got == {
        "backbone.0.weight": (pytest.approx(0.01), 1e-4),
        "backbone.0.bias": (pytest.approx(0.01), 0.0),
        "backbone.1.weight": (pytest.approx(0.01), 0.0),
        "backbone.1.bias": (pytest.approx(0.01), 0.0),
        "head.weight": (0.2, 5e-4),
        "head.bias": (0.2, 0.0),
    }  # frozen parameters are left out


def test_decay_applies_to_norm_and_bias_unless_switched_off() -> None:
    cfg = AdamWConfig(lr=1e-3, weight_decay=0.05)
    got = groups_by_param(param_groups(Net(), cfg, base_lr=1e-3))
    assert {wd for _, wd in got.values()} == {0.05}


def test_optimizer_kinds_and_lr_scaling() -> None:
    sgd = build_optimizer(
        Net(), SGDConfig(lr=0.1, momentum=0.9, nesterov=True, reference_batch_size=256), 128
    )
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.9
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.05)
    adamw = build_optimizer(Net(), AdamWConfig(lr=1e-3, betas=(0.8, 0.99)), 64)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["betas"] == (0.8, 0.99)


def lrs(schedule: ScheduleConfig, steps_per_epoch: int, epochs: int, base: float) -> list[float]:
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=base)
    scheduler = build_scheduler(optimizer, schedule, steps_per_epoch, epochs)
    values = []
    for step in range(steps_per_epoch * epochs + 1):
        scheduler.step_update(num_updates=step)
        values.append(optimizer.param_groups[0]["lr"])
    return values


@settings(max_examples=25, deadline=None)
@given(
    warmup=st.integers(0, 20),
    spe=st.integers(1, 20),
    epochs=st.integers(1, 8),
    min_lr=st.sampled_from([0.0, 1e-5]),
)
def test_warmup_then_cosine_matches_arithmetic(
    warmup: int, spe: int, epochs: int, min_lr: float
) -> None:
    base, init = 0.4, 0.01
    total = spe * epochs
    warm = min(warmup, total)
    cfg = ScheduleConfig(type="cosine", warmup_steps=warmup, warmup_lr_init=init, min_lr=min_lr)
    for t, lr in enumerate(lrs(cfg, spe, epochs, base)):
        if t < warm:
            expected = init + t * (base - init) / warm
        else:
            progress = min(1.0, (t - warm) / max(1, total - warm))
            expected = min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * progress))
        assert lr == pytest.approx(expected, rel=1e-9, abs=1e-12), t


def test_step_and_multistep_decay_at_the_documented_steps() -> None:
    # 10 steps per epoch, 2 warmup epochs (20 steps), decay counted after the warmup
    step = lrs(ScheduleConfig(type="step", warmup_epochs=2, step_epochs=3, gamma=0.5), 10, 10, 1.0)
    assert step[19] == pytest.approx(0.95)  # warmup: 19/20
    assert step[20] == step[49] == 1.0
    assert step[50] == step[79] == 0.5
    assert step[80] == 0.25
    multi = lrs(ScheduleConfig(type="multistep", milestones=[2, 5], gamma=0.1), 10, 8, 1.0)
    assert multi[19] == 1.0
    assert multi[20] == pytest.approx(0.1) and multi[49] == pytest.approx(0.1)
    assert multi[50] == pytest.approx(0.01)
    constant = lrs(ScheduleConfig(type="constant", warmup_epochs=0.5), 10, 3, 0.3)
    assert constant[:6] == pytest.approx([0.0, 0.06, 0.12, 0.18, 0.24, 0.3])
    assert set(constant[5:]) == {0.3}


def test_trainer_schedule_lr_scaling_and_group_lrs(tmp_path: Path) -> None:
    recipe = tiny_recipe(
        tmp_path / "run",
        optimizer={
            "type": "sgd",
            "lr": 0.1,
            "reference_batch_size": 4,  # effective batch 8 x accum 2 = 16 -> lr 0.4
            "param_groups": [{"pattern": "net.0.*", "lr_mult": 0.5}],
        },
        schedule={"type": "cosine", "warmup_epochs": 1},
        trainer={"batch_size": 8, "grad_accum_steps": 2, "epochs": 2},
    )
    trainer = Trainer(recipe)
    assert trainer.steps_per_epoch == 3  # 48 samples / 8 = 6 micro-batches, 2 per step
    result = trainer.fit()
    assert trainer.global_step == 6
    # end of training: cosine reached min_lr 0 after 3 warmup + 3 cosine steps
    assert result.metrics["lr"] == pytest.approx(0.0, abs=1e-12)
    history = [r for r in trainer.history if r["kind"] == "step"]
    expected = {2: 0.4 * 2 / 3, 4: 0.4 * 0.5 * (1 + math.cos(math.pi / 3)), 6: 0.0}
    assert {r["step"]: r["lr"] for r in history} == pytest.approx(expected)
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert groups["net.0.*"]["lr_mult"] == 0.5
    assert groups["net.0.*"]["initial_lr"] == pytest.approx(0.2)
    assert groups["default"]["initial_lr"] == pytest.approx(0.4)


def test_cpu_optimizers_update_all_tensors_at_once() -> None:
    """AdamW takes torch's fused kernel and SGD its foreach path on CPU (not the per-tensor
    Python loop); a model on two device types keeps torch's default."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    adamw = build_optimizer(model, AdamWConfig(lr=1e-3), effective_batch=1)
    sgd = build_optimizer(model, SGDConfig(lr=0.1), effective_batch=1)
    assert adamw.defaults["fused"] is True and sgd.defaults["foreach"] is True
    model[1].to("meta")
    assert build_optimizer(model, AdamWConfig(lr=1e-3), effective_batch=1).defaults["fused"] is None
