"""ImageNet input pipelines, training and eval: ours vs torchvision ImageFolder + PIL, images/s.

Ours is the resnet recipe's ``imagenet_folder`` dataset: JPEGs decoded by libjpeg-turbo
(simplejpeg) at the largest DCT reduction that still covers the crop (train:
RandomResizedCrop + flip) or the resize (eval: resize 256 + centre crop 224), uint8 batches
normalized after loading (on the GPU in a real run, on this CPU here, timed). Also shown:
``decoder: full`` (torchvision.io decode of every pixel + transforms v2) and
``data.loader.backend: dali`` on the CPU (NVIDIA DALI: region-of-interest decoding with
libjpeg-turbo, resize, flip; ``--workers`` DALI threads instead of worker processes; skipped
when DALI is not installed). ``--cpus 0,1`` pins the whole run (workers and DALI threads
inherit it) to those cores, so every pipeline gets the same CPU budget. The baseline is
``torchvision.datasets.ImageFolder`` with PIL and the classic transforms (+ ToTensor,
Normalize). Same generated JPEGs at ImageNet's size distribution (median ~500x375, a tail
past 1000 px), same workers, same batch size; rounds interleave the pipelines and the
median and min-max of the rounds are printed. Targets: train >= 1.5x, eval >= 1.3x.

    python benchmarks/resnet_input_pipeline.py --workers 2 --images 384 --rounds 3
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import simplejpeg
import torch
from torch.utils.data import DataLoader
from torchvision import datasets as tv_datasets
from torchvision import transforms as classic
from torchvision.io import encode_jpeg
from tqdm import tqdm

import visionforge
from visionforge.config import LoaderConfig
from visionforge.data import IMAGENET_MEAN, IMAGENET_STD, device_normalize
from visionforge.engine.data import ResumableSampler, SeededDataset, make_loader
from visionforge_resnet.backends import dali_missing
from visionforge_resnet.reduced_decode import ReducedDecodeEval, ReducedDecodeTrain

Finish = Callable[[Any], torch.Tensor]


def imagenet_like_size(gen: torch.Generator) -> tuple[int, int]:
    """(height, width) drawn like ImageNet train: most 500 px on the longer side at 4:3 or
    3:2 (either orientation), some smaller, ~8% between 1000 and 2500 px."""
    u = float(torch.rand(1, generator=gen))
    if u < 0.08:
        longer = int(1000 + 1500 * float(torch.rand(1, generator=gen)))
    elif u < 0.25:
        longer = int(200 + 300 * float(torch.rand(1, generator=gen)))
    else:
        longer = 500
    aspect = (4 / 3, 3 / 2, 1.0)[int(torch.randint(0, 3, (1,), generator=gen))]
    shorter = round(longer / aspect)
    return (shorter, longer) if float(torch.rand(1, generator=gen)) < 0.8 else (longer, shorter)


def photo_like(height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """Smooth colour regions with edges and a little sensor noise (JPEG sizes near ImageNet's
    ~110 kB at 500x375, quality 90)."""
    low = torch.rand((1, 3, max(2, height // 24), max(2, width // 24)), generator=gen)
    image = torch.nn.functional.interpolate(low, size=(height, width), mode="bicubic")[0]
    image = image + 0.03 * torch.randn((3, height, width), generator=gen)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def write_dataset(root: Path, images: int, classes: int, seed: int = 0) -> list[Path]:
    gen = torch.Generator().manual_seed(seed)
    paths = []
    for i in tqdm(range(images), desc="generating JPEGs", unit="img"):
        folder = root / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i}.JPEG"
        data = encode_jpeg(photo_like(*imagenet_like_size(gen), gen), quality=90)
        path.write_bytes(data.numpy().tobytes())
        paths.append(path)
    return paths


def loader_of(dataset: Any, args: argparse.Namespace) -> DataLoader[Any]:
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )


def ours(decoder: str, augment: str) -> Callable[[Path, argparse.Namespace], Any]:
    def make(root: Path, args: argparse.Namespace) -> tuple[DataLoader[Any], Finish]:
        dataset = visionforge.datasets.build(
            {
                "type": "imagenet_folder",
                "root": str(root),
                "image_size": args.image_size,
                "augment": augment,
                "normalize": False,
                "decoder": decoder,
            }
        )

        def finish(batch: dict[str, Any]) -> torch.Tensor:
            return device_normalize(batch["image"], IMAGENET_MEAN, IMAGENET_STD)

        return loader_of(dataset, args), finish

    return make


class Epochs:
    """Each iteration of a resumable-sampler loader is the next epoch (a new order)."""

    def __init__(self, loader: Iterable[Any], sampler: ResumableSampler) -> None:
        self.loader, self.sampler, self.epochs = loader, sampler, itertools.count()

    def __iter__(self) -> Iterator[Any]:
        self.sampler.set_position(next(self.epochs))
        return iter(self.loader)


def ours_dali(augment: str) -> Callable[[Path, argparse.Namespace], Any]:
    """``imagenet_folder`` with ``data.loader.backend: dali`` on the CPU, ``--workers``
    threads, as the Trainer builds it."""

    def make(root: Path, args: argparse.Namespace) -> tuple[Epochs, Finish]:
        dataset = visionforge.datasets.build(
            {
                "type": "imagenet_folder",
                "root": str(root),
                "image_size": args.image_size,
                "augment": augment,
                "normalize": False,
            }
        )
        sampler = ResumableSampler(len(dataset), args.batch_size, drop_last=False)
        cfg = LoaderConfig(num_workers=args.workers, backend="dali", backend_fallback="error")
        loader = make_loader(SeededDataset(dataset, 0), sampler, args.batch_size, cfg, 0, False)

        def finish(batch: dict[str, Any]) -> torch.Tensor:
            return device_normalize(batch["image"], IMAGENET_MEAN, IMAGENET_STD)

        return Epochs(loader, sampler), finish

    return make


def baseline(augment: str) -> Callable[[Path, argparse.Namespace], Any]:
    def make(root: Path, args: argparse.Namespace) -> tuple[DataLoader[Any], Finish]:
        size = args.image_size
        geometry: list[Any] = (
            [classic.RandomResizedCrop(size), classic.RandomHorizontalFlip()]
            if augment == "train"
            else [classic.Resize(round(size / 0.875)), classic.CenterCrop(size)]
        )
        steps = [*geometry, classic.ToTensor(), classic.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        dataset = tv_datasets.ImageFolder(str(root), transform=classic.Compose(steps))

        def finish(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            return batch[0]

        return loader_of(dataset, args), finish

    return make


def images_per_second(loader: Iterable[Any], finish: Finish, epochs: int) -> float:
    """Images/s over ``epochs`` passes after one warm-up pass (workers started, page cache)."""
    for batch in loader:
        finish(batch)
    count = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            images = finish(batch)
            assert images.dtype == torch.float32 and images.ndim == 4
            count += images.shape[0]
    return count / (time.perf_counter() - start)


def where_time_goes(paths: list[Path], image_size: int, repeats: int = 5) -> None:
    """One core, no loader: decode alone (full, at the chosen DCT scale) vs the whole step."""
    blobs = [p.read_bytes() for p in paths[:64]]
    train, evaluate = ReducedDecodeTrain(image_size), ReducedDecodeEval(image_size, 256)

    def rate(fn: Callable[[bytes], Any]) -> float:
        start = time.perf_counter()
        for data in blobs:
            fn(data)
        return len(blobs) / (time.perf_counter() - start)

    def train_decode_only(data: bytes) -> Any:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        _, factor, _ = train.plan(height, width)
        return simplejpeg.decode_jpeg(data, min_height=-(-height // factor), min_width=1)

    def eval_decode_only(data: bytes) -> Any:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        factor = evaluate.factor(height, width)
        return simplejpeg.decode_jpeg(data, min_height=-(-height // factor), min_width=1)

    rows: dict[str, Callable[[bytes], Any]] = {
        "full decode (libjpeg-turbo)": lambda d: simplejpeg.decode_jpeg(d),
        "train: decode at chosen DCT scale": train_decode_only,
        "train: whole step (decode+crop+resize+flip)": train,
        "eval: decode at chosen DCT scale": eval_decode_only,
        "eval: whole step (decode+resize+crop)": evaluate,
    }
    rates: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeats):  # interleaved: each repeat sees about the same load
        for name, fn in rows.items():
            rates[name].append(rate(fn))
    print(f"\nwhere time goes (1 core, {len(blobs)} images, median of {repeats}, images/s):")
    for name, runs in rates.items():
        print(f"  {name:46} {statistics.median(runs):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=384, help="JPEGs generated")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1, help="timed passes per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--cpus", help="pin the run to these cores, e.g. 0,1 (default: all)")
    args = parser.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    torch.set_num_threads(1)
    missing = dali_missing()
    if missing is not None:
        print(f"DALI rows skipped: {missing}")
    pipelines: dict[str, dict[str, Callable[[Path, argparse.Namespace], Any]]] = {
        augment: {
            "torchvision ImageFolder + PIL": baseline(augment),
            "ours: imagenet_folder, decoder full": ours("full", augment),
            "ours: imagenet_folder, decoder reduced": ours("reduced", augment),
        }
        for augment in ("train", "eval")
    }
    if missing is None:
        for augment, makers in pipelines.items():
            makers["ours: imagenet_folder, backend dali (CPU)"] = ours_dali(augment)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_dataset(Path(tmp), args.images, args.classes)
        kilobytes = sum(p.stat().st_size for p in paths) / len(paths) / 1024
        rates: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for augment, makers in pipelines.items():
                for name, make in makers.items():
                    loader, finish = make(Path(tmp), args)
                    rate = images_per_second(loader, finish, args.epochs)
                    rates.setdefault((augment, name), []).append(rate)
                    print(f"round {round_ + 1} {augment:5} {name:44} {rate:8.1f} images/s")
                    del loader
        where_time_goes(paths, args.image_size)
    cores = sorted(os.sched_getaffinity(0))
    print(
        f"\n{args.images} JPEGs (mean {kilobytes:.0f} kB) -> {args.image_size}px, batch "
        f"{args.batch_size}, {args.workers} workers / DALI threads on cores {cores}, "
        f"{args.rounds} interleaved rounds, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'':6}{'pipeline':44} {'median':>8} {'min':>8} {'max':>8} {'ratio':>7}")
    for augment, target in (("train", 1.5), ("eval", 1.3)):
        base = statistics.median(rates[(augment, "torchvision ImageFolder + PIL")])
        for name in pipelines[augment]:
            runs = rates[(augment, name)]
            median = statistics.median(runs)
            print(
                f"{augment:6}{name:44} {median:8.1f} {min(runs):8.1f} {max(runs):8.1f} "
                f"{median / base:6.2f}x"
            )
        for short, name in (
            ("reduced", "ours: imagenet_folder, decoder reduced"),
            ("dali", "ours: imagenet_folder, backend dali (CPU)"),
        ):
            if (augment, name) not in rates:
                continue
            ratio = statistics.median(rates[(augment, name)]) / base
            verdict = "OK" if ratio >= target else "BELOW TARGET"
            print(f"{augment}: {short} / PIL {ratio:.2f}x (target >= {target}x): {verdict}")
        print()


if __name__ == "__main__":
    main()
