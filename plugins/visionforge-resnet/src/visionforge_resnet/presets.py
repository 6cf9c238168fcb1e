"""ImageNet recipe presets (torch-free): the ResNet50-from-scratch run and its variants.

:func:`imagenet_recipe` returns the recipe of ``examples/resnet50_imagenet/recipe.yaml`` for
ResNet-18/34/50/101 or any timm classifier, as a plain dict ready for
:func:`visionforge.config.recipe_from_dict` or YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

REFERENCE_VAL_TOP1 = {1: 0.0916, 31: 0.6068, 61: 0.6886, 89: 0.7677}
"""Val top-1 of the reference run (ResNet50, 90 epochs, one GPU) after chosen epochs
(1-based, as everywhere in visionforge: epoch 1 is the first)."""
REFERENCE_FINAL = {"val_top1": 0.7677, "val_top5": 0.9351}
"""Best val accuracy of the reference run (epoch 89)."""


@dataclass(frozen=True)
class Preset:
    """A backbone the ImageNet recipe is tuned for."""

    name: str
    depth: int
    drop_path_rate: float
    note: str


PRESETS: dict[str, Preset] = {
    "resnet18": Preset("resnet18", 18, 0.0, "small: no drop path"),
    "resnet34": Preset("resnet34", 34, 0.05, "drop path 0.05"),
    "resnet50": Preset("resnet50", 50, 0.1, "the reference run: 76.77% top-1 / 93.51% top-5"),
    "resnet101": Preset("resnet101", 101, 0.2, "deeper: drop path 0.2"),
}
"""ResNet presets; other timm classifiers use drop path :data:`DEFAULT_DROP_PATH`."""

DEFAULT_DROP_PATH = 0.1


def model_block(arch: str, num_classes: int, drop_path_rate: float | None = None) -> dict[str, Any]:
    """The ``model:`` block for a preset name (``resnet50``) or any timm classifier name."""
    preset = PRESETS.get(arch)
    if preset is not None:
        rate = preset.drop_path_rate if drop_path_rate is None else drop_path_rate
        return {
            "type": "resnet",
            "depth": preset.depth,
            "num_classes": num_classes,
            "drop_path_rate": rate,
        }
    rate = DEFAULT_DROP_PATH if drop_path_rate is None else drop_path_rate
    return {"type": "timm", "name": arch, "num_classes": num_classes, "drop_path_rate": rate}


def imagenet_recipe(
    arch: str = "resnet50",
    *,
    train_root: str = "data/imagenet/train",
    val_root: str = "data/imagenet/val",
    num_classes: int = 1000,
    output: str = "runs/resnet50_imagenet",
    name: str = "resnet50_imagenet",
    drop_path_rate: float | None = None,
    batch_size: int = 128,
    epochs: int = 90,
    image_size: int = 224,
    num_workers: int | None = None,
    ema: bool = False,
) -> dict[str, Any]:
    """The reference ImageNet recipe as a dict.

    SGD + Nesterov 0.9, lr 0.1 x batch/256, weight decay 1e-4 off norm and bias, 5 warmup
    epochs then cosine to 1e-5, label smoothing 0.1, mixup 0.2 / cutmix 1.0 (soft targets),
    drop path, bf16 autocast, channels_last, JPEGs decoded at reduced DCT scale into uint8
    batches normalized on the device, top-1/
    top-5 every epoch, a checkpoint every epoch.
    """
    return {
        "name": name,
        "model": model_block(arch, num_classes, drop_path_rate),
        "data": {
            "train": {
                "type": "imagenet_folder",
                "root": train_root,
                "image_size": image_size,
                "augment": "train",
                "normalize": False,
                "decoder": "reduced",
            },
            "val": {
                "type": "imagenet_folder",
                "root": val_root,
                "image_size": image_size,
                "augment": "eval",
                "normalize": False,
                "decoder": "reduced",
            },
            "loader": {
                # without num_workers: the CPUs this process may use, at most 8
                **({} if num_workers is None else {"num_workers": num_workers}),
                "pin_memory": True,
                "persistent_workers": num_workers != 0,
            },
            "mixup": {
                "mixup_alpha": 0.2,
                "cutmix_alpha": 1.0,
                "prob": 1.0,
                "switch_prob": 0.5,
                "label_smoothing": 0.1,
                "num_classes": num_classes,
            },
            "normalize_on_device": [IMAGENET_MEAN, IMAGENET_STD],
        },
        "loss": {"type": "cross_entropy", "label_smoothing": 0.1},
        "optimizer": {
            "type": "sgd",
            "lr": 0.1,
            "reference_batch_size": 256,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": 1e-4,
            "no_decay_norm_and_bias": True,
        },
        "schedule": {
            "type": "cosine",
            "warmup_epochs": 5,
            "warmup_lr_init": 1e-5,
            "min_lr": 1e-5,
        },
        "trainer": {
            "epochs": epochs,
            "batch_size": batch_size,
            "precision": "bf16",
            "channels_last": True,
            "train_metrics": True,
            "keep_epoch_checkpoints": True,
            "ema": {"decay": 0.9998} if ema else None,
            "output": output,
            "loggers": ["console", "csv"],
        },
        "evaluator": {"type": "topk", "k": [1, 5], "per_class": True},
    }
