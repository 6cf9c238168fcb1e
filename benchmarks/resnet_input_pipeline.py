"""ImageNet input pipelines, training and eval: ours vs torchvision ImageFolder + PIL, images/s.

Ours is the resnet recipe's ``imagenet_folder`` dataset: JPEGs decoded by libjpeg-turbo
(simplejpeg) at the largest DCT reduction that still covers the crop (train:
RandomResizedCrop + flip) or the resize (eval: resize 256 + centre crop 224), uint8 batches
normalized after loading (on the GPU in a real run, on this CPU here, timed). Also shown:
``decoder: full`` (torchvision.io decode of every pixel + transforms v2). The baseline is
``torchvision.datasets.ImageFolder`` with PIL and the classic transforms (+ ToTensor,
Normalize). Same generated JPEGs at ImageNet's size distribution (median ~500x375, a tail
past 1000 px), same workers, same batch size; rounds interleave the pipelines and the
median and min-max of the rounds are printed. Targets: train >= 1.5x, eval >= 1.3x.

    python benchmarks/resnet_input_pipeline.py --workers 2 --images 384 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
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
from visionforge.data import IMAGENET_MEAN, IMAGENET_STD, device_normalize
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
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipelines: dict[str, dict[str, Callable[[Path, argparse.Namespace], Any]]] = {
        augment: {
            "torchvision ImageFolder + PIL": baseline(augment),
            "ours: imagenet_folder, decoder full": ours("full", augment),
            "ours: imagenet_folder, decoder reduced": ours("reduced", augment),
        }
        for augment in ("train", "eval")
    }
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
                    print(f"round {round_ + 1} {augment:5} {name:40} {rate:8.1f} images/s")
                    del loader
        where_time_goes(paths, args.image_size)
    print(
        f"\n{args.images} JPEGs (mean {kilobytes:.0f} kB) -> {args.image_size}px, batch "
        f"{args.batch_size}, {args.workers} workers, {args.rounds} interleaved rounds"
    )
    print(f"{'':6}{'pipeline':40} {'median':>8} {'min':>8} {'max':>8} {'ratio':>7}")
    for augment, target in (("train", 1.5), ("eval", 1.3)):
        base = statistics.median(rates[(augment, "torchvision ImageFolder + PIL")])
        for name in pipelines[augment]:
            runs = rates[(augment, name)]
            median = statistics.median(runs)
            print(
                f"{augment:6}{name:40} {median:8.1f} {min(runs):8.1f} {max(runs):8.1f} "
                f"{median / base:6.2f}x"
            )
        ours_rate = statistics.median(rates[(augment, "ours: imagenet_folder, decoder reduced")])
        ratio = ours_rate / base
        verdict = "OK" if ratio >= target else "BELOW TARGET"
        print(f"{augment}: reduced / PIL {ratio:.2f}x (target >= {target}x): {verdict}\n")


if __name__ == "__main__":
    main()
