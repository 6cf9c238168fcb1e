"""DETR training step (forward + loss + backward): visionforge's ``detr_r50`` vs
transformers' ``DetrForObjectDetection`` with the same sizes on the same batch.

Both: ResNet-50 with frozen batch norm, random weights (transformers:
``use_pretrained_backbone=False``), 256-wide 6+6 transformer, 8 heads, FFN 2048, 100 queries,
91 classes, auxiliary losses, Hungarian matching with costs 1/5/2 and losses 1/5/2, train
mode with dropout 0.1, padded batch with its mask. Steps alternate between the two models;
the table gives the median step time with min-max, and the ratio of medians. Peak memory is
measured in a fresh subprocess per model (peak RSS growth over one step on CPU,
``max_memory_allocated`` on CUDA). ``--profile`` prints where each model's time goes.

    python benchmarks/detr_train_step.py                        # CPU, 2 x 512x640
    python benchmarks/detr_train_step.py --height 320 --width 400 --steps 3
    python benchmarks/detr_train_step.py --device cuda --steps 20
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torchvision import tv_tensors

NUM_CLASSES = 91
IMPLEMENTATIONS = ("visionforge", "transformers")


def make_batch(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Random images; the second one padded on the right/bottom; three boxes each."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.height, args.width, generator=generator)
    mask = torch.zeros(args.batch_size, args.height, args.width, dtype=torch.bool)
    if args.batch_size > 1:
        mask[1:, args.height * 3 // 4 :, :] = True
        mask[1:, :, args.width * 3 // 4 :] = True
    images = images.masked_fill(mask[:, None], 0)
    targets = []
    for i in range(args.batch_size):
        h = args.height * 3 // 4 if i else args.height
        w = args.width * 3 // 4 if i else args.width
        xy = torch.rand(3, 2, generator=generator) * torch.tensor([w / 2, h / 2])
        wh = (0.1 + 0.4 * torch.rand(3, 2, generator=generator)) * torch.tensor([w / 2, h / 2])
        boxes = tv_tensors.BoundingBoxes(
            torch.cat([xy, xy + wh], 1), format="XYXY", canvas_size=(h, w)
        )
        targets.append(
            {"boxes": boxes, "labels": torch.randint(1, NUM_CLASSES, (3,), generator=generator)}
        )
    return {"image": images.to(device), "mask": mask.to(device), "target": targets}


def ours(device: torch.device) -> tuple[torch.nn.Module, Callable[[dict[str, Any]], torch.Tensor]]:
    import visionforge

    model = visionforge.models.build({"type": "detr_r50", "num_classes": NUM_CLASSES}).to(device)
    criterion = visionforge.losses.build({"type": "detr"})

    def step(batch: dict[str, Any]) -> torch.Tensor:
        return criterion(model(batch), batch)["loss"]

    return model, step


def theirs(
    device: torch.device,
) -> tuple[torch.nn.Module, Callable[[dict[str, Any]], torch.Tensor]]:
    from torchvision.ops import box_convert
    from transformers import DetrConfig, DetrForObjectDetection

    sizes: dict[str, Any] = {
        "num_labels": NUM_CLASSES,
        "num_queries": 100,
        "d_model": 256,
        "encoder_layers": 6,
        "decoder_layers": 6,
        "encoder_ffn_dim": 2048,
        "decoder_ffn_dim": 2048,
        "encoder_attention_heads": 8,
        "decoder_attention_heads": 8,
        "dropout": 0.1,
        "auxiliary_loss": True,
        "class_cost": 1,
        "bbox_cost": 5,
        "giou_cost": 2,
        "bbox_loss_coefficient": 5,
        "giou_loss_coefficient": 2,
        "eos_coefficient": 0.1,
        "backbone": "resnet50",  # timm, frozen batch norm
        "use_pretrained_backbone": False,  # random weights, no download
    }
    config = DetrConfig(**sizes)
    model: torch.nn.Module = DetrForObjectDetection(config)
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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(
    step: Callable[[dict[str, Any]], torch.Tensor],
    model: torch.nn.Module,
    batch: dict[str, Any],
    device: torch.device,
) -> float:
    model.zero_grad(set_to_none=True)
    synchronize(device)
    start = time.perf_counter()
    step(batch).backward()
    synchronize(device)
    return time.perf_counter() - start


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def child_memory(name: str, args: argparse.Namespace) -> None:
    """One model in this (fresh) process: warm step, then the peak growth of one step."""
    device = torch.device(args.device)
    model, step = BUILDERS[name](device)
    model.train()
    batch = make_batch(args, device)
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
    sizes += ["--width", str(args.width), "--device", args.device]
    cmd = [sys.executable, __file__, "--child-memory", name, *sizes]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mib"])


def profile(
    name: str,
    step: Callable[[dict[str, Any]], torch.Tensor],
    model: torch.nn.Module,
    batch: dict[str, Any],
) -> None:
    from torch.profiler import profile as torch_profile

    with torch_profile() as prof:
        step(batch).backward()
    model.zero_grad(set_to_none=True)
    print(f"\n{name}: top operators by self time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--child-memory", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(args.child_memory, args)
        return
    device = torch.device(args.device)
    torch.manual_seed(0)
    built = {name: BUILDERS[name](device) for name in IMPLEMENTATIONS}
    batch = make_batch(args, device)
    times: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
    for model, step in built.values():
        model.train()
        for _ in range(args.warmup):
            timed_step(step, model, batch, device)
    for _ in range(args.steps):
        for name, (model, step) in built.items():
            times[name].append(timed_step(step, model, batch, device))
    memory = {} if args.no_memory else {name: memory_of(name, args) for name in IMPLEMENTATIONS}
    print(
        f"DETR-R50 train step, {args.device}, batch {args.batch_size} x 3 x {args.height} x "
        f"{args.width}, {torch.get_num_threads()} threads, {args.steps} steps each (alternating)"
    )
    print(f"{'':14}{'median s':>10}{'min-max s':>16}{'peak MiB':>10}")
    for name in IMPLEMENTATIONS:
        t = times[name]
        peak = f"{memory[name]:10.0f}" if memory else f"{'-':>10}"
        print(f"{name:14}{statistics.median(t):10.3f}{f'{min(t):.3f}-{max(t):.3f}':>16}{peak}")
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
