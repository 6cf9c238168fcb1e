"""Benchmark: distillation epoch time with the teacher cache vs the teacher on the fly.

    python benchmarks/distill_cache.py --classes 16 --epochs 3 --rounds 2 --batch-size 8 --threads 1

The issue's case: a frozen ViT-B/14 teacher (DINOv2 sizes: hidden 768, 12 layers, patch 14,
86M parameters, random weights, 224 px) distilled into an EfficientNet-Lite0 student (timm,
projection to 768). Generated card images, one per class. In the same process the core Trainer
trains the student twice, teacher on the fly and with ``teacher.cache`` (one fixed view per
image, same views in both runs), ``--rounds`` times in alternation so load drifts hit both.

Each run's first epoch is left out of the comparison on both sides: it computes the teacher's
class prototypes (both runs) and fills the cache (cached run). The table shows the remaining
epochs (median, min, max over rounds and epochs) and where their time goes: inside the
teacher module (the forward, or the cache lookup + logits head), the rest of the steps (data
wait, student forward/backward, optimizer), and the end of epoch (checkpoint). The last line
checks that both runs logged the same losses step by step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Dinov2Config, Dinov2Model

import visionforge
from visionforge.config import recipe_from_dict
from visionforge.engine import Trainer
from visionforge.engine.data import default_num_workers
from visionforge_distill.cards import make_cards

PARTS = ("epoch", "teacher", "rest of steps", "checkpoint")


class EpochClock:
    """Plugin: per epoch, wall time in total, inside the teacher, and at the epoch's end.

    An epoch runs from the previous epoch's checkpoint (or the start) to its own checkpoint
    being written; the teacher's share is timed with forward hooks on the frozen module.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._teacher = 0.0
        self._entered = 0.0

    def watch(self, teacher: nn.Module) -> None:
        """Time ``teacher``'s forward calls from now on."""
        self.epochs = []
        teacher.register_forward_pre_hook(self._enter)
        teacher.register_forward_hook(self._leave)

    def _enter(self, *_: Any) -> None:
        self._entered = time.perf_counter()

    def _leave(self, *_: Any) -> None:
        self._teacher += time.perf_counter() - self._entered

    @visionforge.hookimpl
    def visionforge_train_start(self, trainer: Any) -> None:
        self._start = time.perf_counter()
        self._teacher = 0.0

    @visionforge.hookimpl
    def visionforge_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        self._steps_end = time.perf_counter()

    @visionforge.hookimpl
    def visionforge_checkpoint_saved(self, trainer: Any, path: str) -> None:
        now = time.perf_counter()
        steps = self._steps_end - self._start
        self.epochs.append(
            {
                "epoch": now - self._start,
                "teacher": self._teacher,
                "rest of steps": steps - self._teacher,
                "checkpoint": now - self._steps_end,
            }
        )
        self._start, self._teacher = now, 0.0


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
            "embedding_dim": args.teacher_hidden,
            "num_classes": args.classes,
        },
        "data": {
            "train": {
                "type": "class_folders",
                "root": str(work / "cards"),
                "image_size": args.image_size,
                "views": 1,
            },
            "loader": {"num_workers": args.workers},
        },
        "loss": {"type": "distillation"},
        "optimizer": {"type": "adamw", "lr": 1e-4, "weight_decay": 0.01},
        "trainer": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "device": args.device,
            "loggers": ["csv"],
            "csv_log_steps": True,
            "log_every_steps": 1,
            "output": str(work / f"{name}-{time.time_ns()}"),
        },
    }


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):>9.2f}{min(values):>8.2f}{max(values):>8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=24, help="images (one per class)")
    parser.add_argument("--epochs", type=int, default=4, help="per run; the first is left out")
    parser.add_argument("--rounds", type=int, default=1, help="on-the-fly + cached run pairs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--teacher-hidden", type=int, default=768, help="ViT-B: 768, ViT-S: 384")
    parser.add_argument("--teacher-layers", type=int, default=12)
    parser.add_argument("--student", default="efficientnet_lite0")
    parser.add_argument("--workers", type=int, default=default_num_workers())
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.epochs < 2:
        parser.error("--epochs: at least 2 (each run's first epoch is left out)")
    work = Path(tempfile.mkdtemp(prefix="vf-distill-bench-"))
    make_cards(work / "cards", args.classes, width=160)
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=args.teacher_hidden,
        num_hidden_layers=args.teacher_layers,
        num_attention_heads=args.teacher_hidden // 64,
        patch_size=14,
        image_size=args.image_size,
    )
    Dinov2Model(config).save_pretrained(work / "teacher")
    clock = EpochClock()
    visionforge.plugins.register_plugin("distill-bench-clock", clock)
    later: dict[str, list[dict[str, float]]] = {"on the fly": [], "cached": []}
    fills: list[float] = []
    ratios: list[float] = []
    agree = 0.0
    for _ in range(args.rounds):
        losses: dict[str, list[float]] = {}
        for name, cache in (("on the fly", False), ("cached", True)):
            trainer = Trainer(recipe_from_dict(recipe(work, name.replace(" ", "-"), args, cache)))
            (teacher,) = trainer.frozen.modules
            assert isinstance(teacher, nn.Module)
            clock.watch(teacher)
            trainer.fit()
            later[name] += clock.epochs[1:]
            if cache:
                fills.append(clock.epochs[0]["epoch"])
            losses[name] = [r["train/loss"] for r in trainer.history if r["kind"] == "step"]
        fly, warm = ([e["epoch"] for e in later[n][1 - args.epochs :]] for n in later)
        ratios.append(statistics.median(fly) / statistics.median(warm))
        pairs = zip(losses["on the fly"], losses["cached"], strict=True)
        agree = max(agree, *(abs(a - b) for a, b in pairs))
    steps = -(-args.classes // args.batch_size)
    params = sum(p.numel() for p in Dinov2Model(config).parameters()) / 1e6
    print(
        f"teacher ViT hidden {args.teacher_hidden} x {args.teacher_layers} layers, patch 14 "
        f"({params:.0f}M params), student {args.student}, {args.image_size}px, "
        f"{args.classes} images, batch {args.batch_size} ({steps} steps/epoch), "
        f"{args.workers} loader workers, torch threads {torch.get_num_threads()}"
    )
    print(
        f"{args.rounds} round(s) x {args.epochs} epochs per run; first epoch of each run left "
        f"out; seconds per epoch, median / min / max over {len(later['cached'])} epochs"
    )
    print(f"{'run':<12}" + "".join(f"{p:>25}" for p in PARTS))
    for name, epochs in later.items():
        print(f"{name:<12}" + "".join(f"{summary([e[p] for e in epochs]):>25}" for p in PARTS))
    print(f"cache-filling first epochs: {summary(fills)}")
    fly = [e["epoch"] for e in later["on the fly"]]
    warm = [e["epoch"] for e in later["cached"]]
    ratio = statistics.median(fly) / statistics.median(warm)
    rounds = ", ".join(f"{r:.2f}x" for r in ratios)
    print(
        f"speed-up of a cached epoch: {ratio:.2f}x (per round {rounds}; slowest on-the-fly vs "
        f"slowest cached epoch {max(fly) / max(warm):.2f}x); target >= 3x"
    )
    print(f"largest |loss difference| per step, cached vs on the fly: {agree:.2e}")


if __name__ == "__main__":
    main()
