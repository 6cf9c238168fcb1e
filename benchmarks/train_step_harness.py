"""Shared harness of the detector training-step benchmarks (``detr_train_step.py``,
``dino_train_step.py``): the batch, the timed step, alternating timing, peak memory in a
fresh subprocess per model, the table with medians, spread and the ratio, and profiles."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from peak_rss import reset_peak_rss, status_kib
from torchvision import tv_tensors
from torchvision.ops import box_convert

NUM_CLASSES = 91
Step = Callable[[dict[str, Any]], torch.Tensor]
Builder = Callable[[torch.device], tuple[torch.nn.Module, Step]]


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


def transformers_step(model: torch.nn.Module, device: torch.device) -> Step:
    """A step of a transformers detector: targets as normalized cxcywh ``labels``."""

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

    return step


def visionforge_step(
    model_type: str, loss_type: str, device: torch.device
) -> tuple[torch.nn.Module, Step]:
    """Our registered model and loss, built as a user would."""
    import visionforge

    model = visionforge.models.build({"type": model_type, "num_classes": NUM_CLASSES}).to(device)
    criterion = visionforge.losses.build({"type": loss_type})

    def step(batch: dict[str, Any]) -> torch.Tensor:
        return criterion(model(batch), batch)["loss"]

    return model, step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(
    step: Step, model: torch.nn.Module, batch: dict[str, Any], device: torch.device
) -> float:
    model.zero_grad(set_to_none=True)
    synchronize(device)
    start = time.perf_counter()
    step(batch).backward()
    synchronize(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def precision(device: torch.device, dtype: str) -> Iterator[None]:
    """Autocast to ``dtype`` (float32: no autocast)."""
    if dtype == "float32":
        yield
        return
    with torch.autocast(device.type, dtype=getattr(torch, dtype)):
        yield


def child_memory(builder: Builder, args: argparse.Namespace) -> None:
    """One model in this (fresh) process: warm step, then the peak growth of one step."""
    device = torch.device(args.device)
    model, step = builder(device)
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
            base = reset_peak_rss()
            timed_step(step, model, batch, device)
            peak = (status_kib("VmHWM") - base) * 1024
    print(json.dumps({"peak_mib": peak / 2**20}))


def memory_of(script: str, name: str, args: argparse.Namespace) -> float:
    sizes = ["--batch-size", str(args.batch_size), "--height", str(args.height)]
    sizes += ["--width", str(args.width), "--device", args.device, "--dtype", args.dtype]
    cmd = [sys.executable, script, "--child-memory", name, *sizes]
    # glibc hands every allocation of 128 KB or more back to the OS when it is freed, so peak
    # RSS follows the live tensors; with its default, adaptive threshold the heap it retains
    # after the warm step made the figure swing by hundreds of MiB between identical runs
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 << 10)}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mib"])


def profile(name: str, step: Step, model: torch.nn.Module, batch: dict[str, Any]) -> None:
    from torch.profiler import profile as torch_profile

    with torch_profile() as prof:
        step(batch).backward()
    model.zero_grad(set_to_none=True)
    print(f"\n{name}: top operators by self time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main(title: str, script: str, builders: Mapping[str, Builder], doc: str) -> None:
    """Parse the common arguments, time the models alternately and print the table."""
    names = tuple(builders)
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--only", choices=names, nargs="+", help="time these implementations")
    parser.add_argument("--child-memory", choices=names, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(builders[args.child_memory], args)
        return
    device = torch.device(args.device)
    chosen = tuple(args.only) if args.only else names
    torch.manual_seed(0)
    built = {name: builders[name](device) for name in chosen}
    batch = make_batch(args, device)
    times: dict[str, list[float]] = {name: [] for name in chosen}
    with precision(device, args.dtype):
        for model, step in built.values():
            model.train()
            for _ in range(args.warmup):
                timed_step(step, model, batch, device)
        for _ in range(args.steps):
            for name, (model, step) in built.items():
                times[name].append(timed_step(step, model, batch, device))
    memory = {} if args.no_memory else {name: memory_of(script, name, args) for name in chosen}
    print(
        f"{title} train step, {args.device} {args.dtype}, batch {args.batch_size} x 3 x "
        f"{args.height} x {args.width}, {torch.get_num_threads()} threads, {args.steps} steps "
        "each (alternating)"
    )
    width = max(len(name) for name in chosen) + 2
    print(f"{'':{width}}{'median s':>10}{'min-max s':>16}{'peak MiB':>10}")
    for name in chosen:
        t = times[name]
        peak = f"{memory[name]:10.0f}" if memory else f"{'-':>10}"
        span = f"{min(t):.3f}-{max(t):.3f}"
        print(f"{name:{width}}{statistics.median(t):10.3f}{span:>16}{peak}")
    ours = times[chosen[0]]
    for name in chosen[1:]:
        theirs = times[name]
        ratio = statistics.median(theirs) / statistics.median(ours)
        spread = (min(theirs) / max(ours), max(theirs) / min(ours))
        print(
            f"speed-up ({name} / {chosen[0]}, medians): {ratio:.2f}x "
            f"(range {spread[0]:.2f}-{spread[1]:.2f})"
        )
    if args.profile:
        with precision(device, args.dtype):
            for name, (model, step) in built.items():
                profile(name, step, model, batch)
