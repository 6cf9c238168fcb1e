"""DINO training step (forward + loss + backward): visionforge's ``dino_r50_4scale`` vs
transformers' ``DeformableDetrForObjectDetection`` (two-stage, box refinement, 900 queries)
on the same batch.

Both: ResNet-50 with frozen batch norm, random weights (transformers:
``use_pretrained_backbone=False``), 4 feature levels, 256-wide 6+6 deformable transformer, 8
heads, 4 points, FFN 2048, 900 queries, 91 classes, focal loss, auxiliary and encoder losses,
train mode. Ours also trains its 100 denoising queries (DINO's CDN): it does more work per
step than the baseline, which has no denoising. Steps alternate between the two models; the
table gives the median step time with min-max, and the ratio of medians. Peak memory is
measured in a fresh subprocess per model (peak RSS growth over one step on CPU,
``max_memory_allocated`` on CUDA). ``--profile`` prints where each model's time goes.

    python benchmarks/dino_train_step.py                        # CPU, 2 x 512x640
    python benchmarks/dino_train_step.py --height 320 --width 400 --steps 3
    python benchmarks/dino_train_step.py --device cuda --dtype bfloat16 --height 800 --width 1066
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from detr_train_step import make_batch, profile, timed_step

NUM_CLASSES = 91
IMPLEMENTATIONS = ("visionforge", "transformers")


def ours(device: torch.device) -> tuple[torch.nn.Module, Callable[[dict[str, Any]], torch.Tensor]]:
    import visionforge

    model = visionforge.models.build({"type": "dino_r50_4scale", "num_classes": NUM_CLASSES})
    model.to(device)
    criterion = visionforge.losses.build({"type": "dino"})

    def step(batch: dict[str, Any]) -> torch.Tensor:
        return criterion(model(batch), batch)["loss"]

    return model, step


def theirs(
    device: torch.device,
) -> tuple[torch.nn.Module, Callable[[dict[str, Any]], torch.Tensor]]:
    from torchvision.ops import box_convert
    from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection

    sizes: dict[str, Any] = {
        "num_labels": NUM_CLASSES,
        "two_stage": True,
        "with_box_refine": True,
        "num_queries": 900,
        "two_stage_num_proposals": 900,
        "backbone": "resnet50",  # timm, frozen batch norm
        "use_pretrained_backbone": False,  # random weights, no download
        "dropout": 0.0,
    }
    config = DeformableDetrConfig(**sizes)
    model: torch.nn.Module = DeformableDetrForObjectDetection(config)
    model.to(device)

    def step(batch: dict[str, Any]) -> torch.Tensor:
        labels = []
        for target in batch["target"]:
            h, w = target["boxes"].canvas_size
            xyxy = target["boxes"].as_subclass(torch.Tensor)
            scale = torch.tensor([w, h, w, h], dtype=xyxy.dtype)
            cxcywh = box_convert(xyxy, "xyxy", "cxcywh") / scale
            labels.append({"class_labels": target["labels"].to(device), "boxes": cxcywh.to(device)})
        return model(
            pixel_values=batch["image"], pixel_mask=(~batch["mask"]).long(), labels=labels
        ).loss

    return model, step


BUILDERS = {"visionforge": ours, "transformers": theirs}


@contextlib.contextmanager
def precision(device: torch.device, dtype: str) -> Iterator[None]:
    """Autocast to ``dtype`` (float32: no autocast)."""
    if dtype == "float32":
        yield
        return
    with torch.autocast(device.type, dtype=getattr(torch, dtype)):
        yield


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def child_memory(name: str, args: argparse.Namespace) -> None:
    """One model in this (fresh) process: warm step, then the peak growth of one step."""
    device = torch.device(args.device)
    model, step = BUILDERS[name](device)
    model.train()
    batch = make_batch(args, device)
    with precision(device, args.dtype):
        timed_step(step, model, batch, device)
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            timed_step(step, model, batch, device)
            peak = torch.cuda.max_memory_allocated(device) - base
        else:
            base = _rss_bytes()
            timed_step(step, model, batch, device)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    print(json.dumps({"peak_mib": peak / 2**20}))


def memory_of(name: str, args: argparse.Namespace) -> float:
    sizes = ["--batch-size", str(args.batch_size), "--height", str(args.height)]
    sizes += ["--width", str(args.width), "--device", args.device, "--dtype", args.dtype]
    cmd = [sys.executable, __file__, "--child-memory", name, *sizes]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mib"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--only", choices=IMPLEMENTATIONS, help="time one implementation")
    parser.add_argument("--child-memory", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(args.child_memory, args)
        return
    device = torch.device(args.device)
    names = (args.only,) if args.only else IMPLEMENTATIONS
    torch.manual_seed(0)
    built = {name: BUILDERS[name](device) for name in names}
    batch = make_batch(args, device)
    times: dict[str, list[float]] = {name: [] for name in names}
    with precision(device, args.dtype):
        for model, step in built.values():
            model.train()
            for _ in range(args.warmup):
                timed_step(step, model, batch, device)
        for _ in range(args.steps):
            for name, (model, step) in built.items():
                times[name].append(timed_step(step, model, batch, device))
    memory = {} if args.no_memory else {name: memory_of(name, args) for name in names}
    print(
        f"DINO-4scale R50 train step, {args.device} {args.dtype}, batch {args.batch_size} x 3 x "
        f"{args.height} x {args.width}, {torch.get_num_threads()} threads, {args.steps} steps "
        "each (alternating)"
    )
    print(f"{'':14}{'median s':>10}{'min-max s':>16}{'peak MiB':>10}")
    for name in names:
        t = times[name]
        peak = f"{memory[name]:10.0f}" if memory else f"{'-':>10}"
        print(f"{name:14}{statistics.median(t):10.3f}{f'{min(t):.3f}-{max(t):.3f}':>16}{peak}")
    if len(names) == 2:
        ratio = statistics.median(times["transformers"]) / statistics.median(times["visionforge"])
        spread = (
            min(times["transformers"]) / max(times["visionforge"]),
            max(times["transformers"]) / min(times["visionforge"]),
        )
        print(
            f"speed-up (transformers / visionforge, medians): {ratio:.2f}x "
            f"(range {spread[0]:.2f}-{spread[1]:.2f})"
        )
    if args.profile:
        for name, (model, step) in built.items():
            profile(name, step, model, batch)


if __name__ == "__main__":
    main()
