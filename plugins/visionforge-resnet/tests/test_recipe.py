"""The ResNet50 recipe: presets, lr arithmetic and weight decay off norm/bias (no training)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

import visionforge
from visionforge.config import Recipe, load_recipe, recipe_from_dict
from visionforge.engine.optim import build_optimizer, build_scheduler
from visionforge_resnet.presets import PRESETS, imagenet_recipe

EXAMPLE = Path(__file__).parents[3] / "examples" / "resnet50_imagenet" / "recipe.yaml"
IMAGENET_TRAIN_IMAGES = 1_281_167


def test_example_recipe_is_the_resnet50_preset() -> None:
    assert yaml.safe_load(EXAMPLE.read_text()) == imagenet_recipe("resnet50")
    recipe = load_recipe(EXAMPLE)
    assert recipe.model.as_dict() == {
        "type": "resnet",
        "depth": 50,
        "num_classes": 1000,
        "drop_path_rate": 0.1,
    }
    assert recipe.optimizer.type == "sgd" and recipe.optimizer.nesterov
    assert recipe.trainer.precision == "bf16" and recipe.trainer.channels_last
    assert recipe.data.mixup is not None and recipe.data.mixup.cutmix_alpha == 1.0


@pytest.mark.parametrize("arch", [*PRESETS, "convnext_tiny"])
def test_presets_and_timm_names_give_valid_recipes(arch: str) -> None:
    data = imagenet_recipe(arch, num_classes=10)
    recipe = recipe_from_dict(data)
    block = recipe.model.as_dict()
    if arch in PRESETS:
        assert block["type"] == "resnet" and block["depth"] == PRESETS[arch].depth
    else:
        assert block == {
            "type": "timm",
            "name": "convnext_tiny",
            "num_classes": 10,
            "drop_path_rate": 0.1,
        }


def test_resnet_model_has_depth_classes_and_drop_path() -> None:
    model = visionforge.models.build(
        {"type": "resnet", "depth": 18, "num_classes": 7, "drop_path_rate": 0.1}
    )
    net = model.export_module()
    assert net.default_cfg["architecture"] == "resnet18"
    assert model({"image": torch.zeros(2, 3, 32, 32)})["logits"].shape == (2, 7)
    drop_paths = [m for m in net.modules() if type(m).__name__ == "DropPath"]
    assert drop_paths and max(m.drop_prob for m in drop_paths) == pytest.approx(0.1)
    last_bn = net.layer1[0].bn2
    assert torch.count_nonzero(last_bn.weight) == 0  # zero_init_last


def _recipe_optimizer(recipe: Recipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    return build_optimizer(model, recipe.optimizer, recipe.trainer.batch_size)


def test_lr_schedule_follows_the_recipe_arithmetic() -> None:
    recipe = load_recipe(EXAMPLE)
    steps_per_epoch = IMAGENET_TRAIN_IMAGES // recipe.trainer.batch_size  # drop_last
    epochs = recipe.trainer.epochs
    optimizer = _recipe_optimizer(recipe, torch.nn.Linear(4, 2))
    scheduler = build_scheduler(optimizer, recipe.schedule, steps_per_epoch, epochs)

    peak = 0.1 * 128 / 256
    start, floor = 1e-5, 1e-5
    warmup = 5 * steps_per_epoch
    decay = (epochs - 5) * steps_per_epoch

    def expected(step: int) -> float:
        if step < warmup:
            return start + (peak - start) * step / warmup
        progress = (step - warmup) / decay
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))

    chosen = [0, warmup // 2, warmup - 1, warmup, warmup + decay // 3, warmup + decay // 2]
    chosen += [epochs * steps_per_epoch - 1]
    for step in chosen:
        scheduler.step_update(num_updates=step)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected(step), rel=1e-9), step
    assert expected(warmup) == pytest.approx(0.05)
    assert expected(warmup + decay // 2) == pytest.approx((0.05 + 1e-5) / 2, rel=1e-5)


@pytest.mark.parametrize("no_decay", [True, False])
def test_weight_decay_skips_norm_and_bias_when_switched_on(no_decay: bool) -> None:
    recipe = load_recipe(
        EXAMPLE, [f"optimizer.no_decay_norm_and_bias={str(no_decay).lower()}", "model.depth=18"]
    )
    model = visionforge.models.build(recipe.model.as_dict())
    optimizer = _recipe_optimizer(recipe, model)
    names = dict(model.named_parameters())
    norm_or_bias = {
        n
        for n, p in names.items()
        if p.ndim <= 1 and (".bn" in n or "bias" in n or "downsample.1" in n)
    }
    assert "net.bn1.weight" in norm_or_bias and "net.fc.bias" in norm_or_bias
    decay_of = {n: g["weight_decay"] for g in optimizer.param_groups for n in g["param_names"]}
    assert set(decay_of) == set(names)
    for name in names:
        wanted = 0.0 if no_decay and name in norm_or_bias else 1e-4
        assert decay_of[name] == wanted, name

    # with zero gradients, one SGD step moves a parameter only through its weight decay
    before = {n: p.detach().clone() for n, p in names.items()}
    for param in names.values():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    for name, param in names.items():
        moved = not torch.equal(param.detach(), before[name])
        if name in norm_or_bias and torch.count_nonzero(before[name]):
            assert moved != no_decay, name
        elif param.ndim > 1:
            assert moved, name
