"""ImageNet training input pipeline: ours vs torchvision's classic ImageFolder, images/s.

Ours is the resnet recipe's pipeline: the core ``image_folder`` dataset (torchvision.io
decode, RandomResizedCrop + flip in transforms v2 on uint8), uint8 batches through the
DataLoader, normalized after loading (on the GPU in a real run, on this CPU here, timed).
The baseline is ``torchvision.datasets.ImageFolder`` with PIL and the classic
``transforms`` (RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize). Same
generated ImageNet-sized JPEGs, same workers, same batch size, same run; target >= 1.5x.

    python benchmarks/resnet_input_pipeline.py --workers 2 --images 512
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torchvision import datasets as tv_datasets
from torchvision import transforms as classic

import visionforge
from visionforge.data import IMAGENET_MEAN, IMAGENET_STD, device_normalize
from visionforge_resnet.tinydata import make_tiny_imagenet


def ours_loader(root: Path, args: argparse.Namespace) -> tuple[DataLoader[Any], Callable[..., Any]]:
    dataset = visionforge.datasets.build(
        {
            "type": "image_folder",
            "root": str(root),
            "image_size": args.image_size,
            "augment": "train",
            "normalize": False,
        }
    )
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=args.workers > 0,
        collate_fn=getattr(dataset, "collate_fn", None),
    )

    def finish(batch: dict[str, Any]) -> torch.Tensor:
        return device_normalize(batch["image"], IMAGENET_MEAN, IMAGENET_STD)

    return loader, finish


def baseline_loader(
    root: Path, args: argparse.Namespace
) -> tuple[DataLoader[Any], Callable[..., Any]]:
    transform = classic.Compose(
        [
            classic.RandomResizedCrop(args.image_size),
            classic.RandomHorizontalFlip(),
            classic.ToTensor(),
            classic.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = tv_datasets.ImageFolder(str(root), transform=transform)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=args.workers > 0,
    )

    def finish(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return batch[0]

    return loader, finish


def images_per_second(
    loader: Iterable[Any], finish: Callable[[Any], torch.Tensor], epochs: int
) -> float:
    """Images/s over ``epochs`` passes after one warm-up pass (workers started, caches warm)."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="training images generated")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--source-size", type=int, default=375, help="shorter side of JPEGs")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="timed passes per pipeline")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds, best kept")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = make_tiny_imagenet(
            tmp,
            num_classes=args.classes,
            train_per_class=args.images // args.classes,
            val_per_class=1,
            image_size=args.source_size,
            progress=True,
        )
        pipelines = {
            "torchvision ImageFolder + PIL + classic transforms": baseline_loader,
            "ours: image_folder + decode_image + v2 (uint8)": ours_loader,
        }
        best = dict.fromkeys(pipelines, 0.0)
        for _ in range(args.rounds):
            for name, make in pipelines.items():
                loader, finish = make(tiny.train, args)
                best[name] = max(best[name], images_per_second(loader, finish, args.epochs))
                del loader
    print(
        f"\n{args.images} JPEGs ~{args.source_size}px -> {args.image_size}px, batch "
        f"{args.batch_size}, {args.workers} workers, best of {args.rounds} rounds"
    )
    print(f"{'pipeline':52} {'images/s':>10}")
    for name, rate in best.items():
        print(f"{name:52} {rate:10.1f}")
    baseline, ours = best.values()
    verdict = "OK" if ours / baseline >= 1.5 else "BELOW TARGET"
    print(f"\nratio ours / baseline: {ours / baseline:.2f}x (target >= 1.5x): {verdict}")


if __name__ == "__main__":
    main()
