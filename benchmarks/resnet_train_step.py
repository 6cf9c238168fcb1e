"""ResNet50 training step: the visionforge Trainer vs a hand-written loop, same settings.

Both run the ImageNet recipe's step: uint8 batches from the same ``image_folder`` dataset,
normalized on the device, timm Mixup/CutMix with label smoothing, timm ResNet50 with drop
path 0.1, soft-target cross-entropy, SGD + Nesterov with no weight decay on norm/bias, the
warmup + cosine lr stepped every optimizer step, running loss and train top-1. Step times
are taken after each optimizer step (device synchronized); the median after warm-up steps
is compared, alternating the two loops. Target: ours / hand-written <= 1.05.

    python benchmarks/resnet_train_step.py                          # CPU, batch 8, fp32
    python benchmarks/resnet_train_step.py --device cuda --batch-size 128 \\
        --precision bf16 --channels-last --steps 30 --workers 8     # GPU: images/s
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader

import visionforge
from visionforge.config import Recipe, recipe_from_dict
from visionforge.engine import Trainer
from visionforge_resnet.presets import IMAGENET_MEAN, IMAGENET_STD, imagenet_recipe
from visionforge_resnet.tinydata import make_tiny_imagenet


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Plugin recording a device-synchronized timestamp after every optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    @visionforge.hookimpl
    def visionforge_train_step_end(self, trainer: Any, step: int, losses: Any) -> None:
        synchronize(trainer.device)
        self.times.append(time.perf_counter())


def warmup_steps(args: argparse.Namespace) -> int:
    """The recipe's 5 warmup epochs of 90, as a share of the benchmark's steps."""
    return max(1, round((args.warmup + args.steps) * 5 / 90))


def bench_recipe(args: argparse.Namespace, train_root: Path, out: Path) -> Recipe:
    """The ImageNet recipe at benchmark size: one epoch of warm-up + timed steps, no val."""
    data = imagenet_recipe(
        "resnet50",
        train_root=str(train_root),
        num_classes=args.classes,
        output=str(out),
        batch_size=args.batch_size,
        epochs=1,
        image_size=args.image_size,
        num_workers=args.workers,
    )
    data["data"]["val"] = None
    data["schedule"]["warmup_steps"] = warmup_steps(args)
    data["trainer"].update(
        device=args.device,
        precision=args.precision,
        channels_last=args.channels_last,
        loggers=[],
        max_steps_per_epoch=args.warmup + args.steps,
    )
    return recipe_from_dict(data)


def ours(recipe: Recipe) -> list[float]:
    clock = StepClock()
    visionforge.plugins.register_plugin("bench-step-clock", clock)
    try:
        Trainer(recipe).fit()
    finally:
        visionforge.LOADER.pm.unregister(clock)
        visionforge.LOADER.infos.pop("bench-step-clock", None)
    return [b - a for a, b in itertools.pairwise(clock.times)]


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def batches(loader: DataLoader[Any]) -> Iterator[dict[str, Any]]:
    while True:
        yield from loader


def hand_written(recipe: Recipe, args: argparse.Namespace) -> list[float]:
    """The loop a user writes by hand for the same recipe."""
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    torch.manual_seed(0)
    batch_size, steps = args.batch_size, args.warmup + args.steps
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = timm.create_model("resnet50", num_classes=args.classes, drop_path_rate=0.1)
    model = model.to(device).to(memory_format=memory_format)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
        lr=0.1 * batch_size / 256,
        momentum=0.9,
        nesterov=True,
    )
    warmup = warmup_steps(args)
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=steps - warmup,
        lr_min=1e-5,
        warmup_t=warmup,
        warmup_lr_init=1e-5,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    mixup = Mixup(mixup_alpha=0.2, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=args.classes)
    criterion = SoftTargetCrossEntropy()
    dataset = visionforge.datasets.build(recipe.data.train.as_dict())
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    running_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    model.train()
    times = []
    for step, batch in zip(range(steps), batches(loader), strict=False):
        images = batch["image"].as_subclass(torch.Tensor).to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        images = ((images.float() - mean) / std).contiguous(memory_format=memory_format)
        images, targets = mixup(images, labels)
        with autocast(device, args.precision):
            logits = model(images)
            loss = criterion(logits, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step_update(num_updates=step + 1)
        running_loss += loss.detach()
        correct += (logits.argmax(1) == targets.argmax(1)).sum()
        synchronize(device)
        times.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per loop and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    intervals: dict[str, list[float]] = {"hand-written loop": [], "visionforge Trainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        per_class = -(-args.batch_size * (args.warmup + args.steps) // args.classes)
        tiny = make_tiny_imagenet(
            Path(tmp) / "data",
            num_classes=args.classes,
            train_per_class=per_class,
            val_per_class=1,
            image_size=args.image_size + 32,
            progress=True,
        )
        for round_index in range(args.rounds):
            recipe = bench_recipe(args, tiny.train, Path(tmp) / f"run{round_index}")
            hand = hand_written(recipe, args)
            intervals["hand-written loop"] += hand[args.warmup - 1 :]
            trainer = ours(recipe)
            intervals["visionforge Trainer"] += trainer[args.warmup - 1 :]
    device = args.device
    if device != "cpu" and torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    print(
        f"\nResNet50 {args.image_size}px, batch {args.batch_size}, {args.precision}"
        f"{', channels_last' if args.channels_last else ''}, {device}, "
        f"{len(intervals['hand-written loop'])} timed steps per loop"
    )
    print(f"{'loop':22} {'median s/step':>14} {'images/s':>10}")
    medians = {}
    for name, values in intervals.items():
        medians[name] = statistics.median(values)
        print(f"{name:22} {medians[name]:14.4f} {args.batch_size / medians[name]:10.1f}")
    ratio = medians["visionforge Trainer"] / medians["hand-written loop"]
    verdict = "OK" if ratio <= 1.05 else "OVER TARGET"
    print(f"\nratio Trainer / hand-written (step time): {ratio:.3f} (target <= 1.05): {verdict}")


if __name__ == "__main__":
    main()
