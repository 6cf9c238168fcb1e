"""Benchmark: distillation epoch time with the teacher cache vs the teacher on the fly.

    python benchmarks/distill_cache.py --classes 48 --epochs 3

Generates card images and a random DINOv2 teacher (ViT-S/14-like: hidden 384, 12 layers,
patch 14; not timed), then trains a tiny timm student with the core Trainer twice in the same
process: teacher on the fly, and with ``teacher.cache`` (one fixed view per image). Epoch
times come from the ``visionforge_epoch_end`` hook. The first cached epoch fills the cache;
later ones read it. The teacher dominates the step here, as a ViT-B teacher does for an
EfficientNet-Lite0 student. The last column checks the logged losses agree.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Dinov2Config, Dinov2Model

import visionforge
from visionforge.config import recipe_from_dict
from visionforge.engine import Trainer
from visionforge_distill.cards import make_cards


class EpochClock:
    """Plugin: wall time of every epoch (training steps, no evaluation: no val set)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    @visionforge.hookimpl
    def visionforge_train_start(self, trainer: Any) -> None:
        self.marks = [time.perf_counter()]

    @visionforge.hookimpl
    def visionforge_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        self.marks.append(time.perf_counter())

    def epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]


def recipe(work: Path, name: str, args: argparse.Namespace, cache: bool) -> dict[str, Any]:
    teacher: dict[str, Any] = {
        "type": "hf_teacher",
        "path": str(work / "teacher"),
        "image_size": args.image_size,
        "head": {"prototypes_from": str(work / "cards")},
    }
    if cache:
        teacher["cache"] = {"dir": str(work / f"cache-{time.time_ns()}"), "views": 1}
    return {
        "name": name,
        "teacher": teacher,
        "model": {
            "type": "distill_student",
            "backbone": args.student,
            "embedding_dim": 384,
            "num_classes": args.classes,
        },
        "data": {
            "train": {
                "type": "class_folders",
                "root": str(work / "cards"),
                "image_size": args.image_size,
                "views": 1,
            }
        },
        "loss": {"type": "distillation"},
        "optimizer": {"type": "adamw", "lr": 1e-3},
        "trainer": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "device": args.device,
            "loggers": ["csv"],
            "csv_log_steps": True,
            "log_every_steps": 1,
            "output": str(work / name),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=48, help="images (one per class)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--student", default="test_efficientnet")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vf-distill-bench-"))
    make_cards(work / "cards", args.classes, width=80)
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        patch_size=14,
        image_size=args.image_size,
    )
    Dinov2Model(config).save_pretrained(work / "teacher")
    clock = EpochClock()
    visionforge.plugins.register_plugin("distill-bench-clock", clock)
    times: dict[str, list[float]] = {}
    losses: dict[str, list[float]] = {}
    for name, cache in (("on-the-fly", False), ("cached", True)):
        trainer = Trainer(recipe_from_dict(recipe(work, name, args, cache)))
        trainer.fit()
        times[name] = clock.epochs()
        losses[name] = [r["train/loss"] for r in trainer.history if r["kind"] == "step"]
    fly = times["on-the-fly"]
    warm = times["cached"][1:]
    print(
        f"{args.classes} images, batch {args.batch_size}, {args.image_size}px, teacher ViT "
        f"hidden 384 x 12 layers, student {args.student}, {args.epochs} epochs, work {work}"
    )
    print(f"{'run':<24}{'epoch s (median)':>18}{'min':>8}{'max':>8}")
    rows = [
        ("teacher on the fly", fly),
        ("cached, first epoch", times["cached"][:1]),
        ("cached, later epochs", warm),
    ]
    for label, values in rows:
        print(
            f"{label:<24}{statistics.median(values):>18.2f}{min(values):>8.2f}{max(values):>8.2f}"
        )
    ratio = statistics.median(fly) / statistics.median(warm)
    worst = min(fly) / max(warm)
    agree = max(abs(a - b) for a, b in zip(losses["on-the-fly"], losses["cached"], strict=True))
    print(f"speed-up of a cached epoch: {ratio:.1f}x (worst pair {worst:.1f}x); target >= 3x")
    print(f"largest |loss difference| per step, cached vs on the fly: {agree:.2e}")


if __name__ == "__main__":
    main()
