"""Trainer step time vs a minimal hand-written PyTorch loop (same model, data and settings).

Both loops train the same registry-built model (a small timm ResNet on CPU by default) on the
same ``synthetic_classification`` dataset with SGD (Nesterov momentum) and cross-entropy,
for the same number of optimizer steps; data loading is part of both. The Trainer is timed
from its ``visionforge_train_start`` hook to its ``visionforge_epoch_end`` hook (no
validation set, so that window is exactly the training steps). Cases alternate for
``--repeats`` rounds (each round swaps which case runs first); the table shows the best
and the median seconds per step and both ratios (on a shared machine other load only ever
adds time: when the two ratios disagree, the machine was noisy). Target: ratio <= 1.05.

    python benchmarks/engine_overhead.py [--steps 30] [--batch-size 32] [--image-size 64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

import visionforge
from visionforge.config import recipe_from_dict
from visionforge.engine import Trainer
from visionforge.registry import REGISTRIES


class WindowTimer:
    """Plugin measuring the time between train start and the first epoch end."""

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds = 0.0

    @visionforge.hookimpl
    def visionforge_train_start(self, trainer: Any) -> None:
        self.start = time.perf_counter()

    @visionforge.hookimpl
    def visionforge_epoch_end(self, trainer: Any, epoch: int, metrics: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def make_recipe(args: argparse.Namespace, output: str) -> Any:
    samples = args.steps * args.batch_size
    return recipe_from_dict(
        {
            "name": "engine-overhead",
            "model": {"type": "timm", "name": args.model, "num_classes": 10},
            "data": {
                "train": {
                    "type": "synthetic_classification",
                    "num_classes": 10,
                    "num_samples": samples,
                    "image_size": args.image_size,
                },
            },
            "loss": {"type": "cross_entropy"},
            "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
            "trainer": {
                "epochs": 1,
                "batch_size": args.batch_size,
                "device": "cpu",
                "max_steps_per_epoch": args.steps,
                "loggers": ["console", "csv"],
                "log_every_steps": 10,
                "output": output,
            },
        }
    )


def run_trainer(args: argparse.Namespace, timer: WindowTimer) -> float:
    with tempfile.TemporaryDirectory() as out:
        Trainer(make_recipe(args, out)).fit()
    return timer.seconds / args.steps


def run_plain(args: argparse.Namespace) -> float:
    """The hand-written loop a user would write with the same pieces."""
    recipe = make_recipe(args, "unused")
    torch.manual_seed(0)
    model = REGISTRIES.models.build(recipe.model.as_dict())
    dataset = REGISTRIES.datasets.build(recipe.data.train.as_dict())
    loss_fn = REGISTRIES.losses.build(recipe.loss.as_dict())
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    model.train()
    start = time.perf_counter()
    for step, batch in enumerate(loader):
        if step == args.steps:
            break
        loss = loss_fn(model(batch), batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    timer = WindowTimer()
    visionforge.plugins.register_plugin("engine-overhead-timer", timer)
    times: dict[str, list[float]] = {"hand-written loop": [], "visionforge Trainer": []}
    for round_index in range(args.repeats):  # alternate which case runs first
        cases = [
            ("hand-written loop", lambda: run_plain(args)),
            ("visionforge Trainer", lambda: run_trainer(args, timer)),
        ]
        for name, run in cases[:: 1 if round_index % 2 == 0 else -1]:
            times[name].append(run())
    best = {name: min(values) for name, values in times.items()}
    print(
        f"\n{args.model} @ {args.image_size}px, batch {args.batch_size}, {args.steps} steps, "
        f"CPU threads {torch.get_num_threads()}, {args.repeats} alternating rounds"
    )
    print(f"{'case':<22} {'best s/step':>12} {'median s/step':>14} {'best img/s':>11}")
    for name, values in times.items():
        print(
            f"{name:<22} {best[name]:>12.4f} {statistics.median(values):>14.4f} "
            f"{args.batch_size / best[name]:>11.1f}"
        )
    medians = {name: statistics.median(values) for name, values in times.items()}
    for label, table in (("best", best), ("median", medians)):
        ratio = table["visionforge Trainer"] / table["hand-written loop"]
        print(f"ratio Trainer / hand-written ({label}): {ratio:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
