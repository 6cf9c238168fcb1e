"""Generate a tiny ImageNet-layout dataset for tests, examples and smoke runs.

``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``; with ``flat_val=True`` the
validation images stay flat in ``root/val_flat/ILSVRC2012_val_%08d.JPEG`` beside the ground
truth in both distributed forms (``LOC_val_solution.csv`` + ``LOC_synset_mapping.txt``, and
``ILSVRC2012_devkit_t12/data/{ILSVRC2012_validation_ground_truth.txt,meta.mat}``), ready for
``visionforge resnet prepare``. Each class has its own colour and stripe direction, so a
small network learns it in a few hundred steps.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.io import savemat
from torchvision.io import encode_jpeg, write_file
from tqdm import tqdm


@dataclass(frozen=True)
class TinyImageNet:
    """Paths of a generated dataset."""

    root: Path
    wnids: list[str]

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def val(self) -> Path:
        return self.root / "val"

    @property
    def val_flat(self) -> Path:
        return self.root / "val_flat"

    @property
    def loc_solution(self) -> Path:
        return self.root / "LOC_val_solution.csv"

    @property
    def synset_mapping(self) -> Path:
        return self.root / "LOC_synset_mapping.txt"

    @property
    def devkit(self) -> Path:
        return self.root / "ILSVRC2012_devkit_t12"


def fake_wnids(num_classes: int) -> list[str]:
    """Distinct, valid-looking WordNet ids (sorted)."""
    return [f"n{1440764 + 7919 * i:08d}" for i in range(num_classes)]


def _class_image(label: int, num_classes: int, gen: torch.Generator, size: int) -> torch.Tensor:
    """A uint8 CHW image: class colour, class stripe direction, random phase and noise."""
    height = size + int(torch.randint(0, size // 2 + 1, (1,), generator=gen))
    width = size + int(torch.randint(0, size // 2 + 1, (1,), generator=gen))
    rgb = torch.tensor(colorsys.hsv_to_rgb(label / num_classes, 0.8, 0.9))
    ys = torch.arange(height).view(-1, 1).float()
    xs = torch.arange(width).view(1, -1).float()
    angle = torch.tensor(math.pi * (label % 4) / 4)
    phase = float(torch.rand(1, generator=gen)) * 2 * math.pi
    period = max(size / 4, 4.0)
    wave = torch.sin((xs * torch.cos(angle) + ys * torch.sin(angle)) * 2 * math.pi / period + phase)
    shade = 0.75 + 0.25 * wave
    image = rgb.view(3, 1, 1) * shade.unsqueeze(0)
    image = image * (0.8 + 0.4 * float(torch.rand(1, generator=gen)))
    image = image + 0.08 * torch.randn((3, height, width), generator=gen)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def _write_jpeg(image: torch.Tensor, path: Path) -> None:
    write_file(str(path), encode_jpeg(image, quality=90))


def _write_devkit(tiny: TinyImageNet, val_labels: list[int], gen: torch.Generator) -> None:
    """Write both ground-truth forms; the devkit's ILSVRC2012_IDs are a shuffled order."""
    wnids = tiny.wnids
    data = tiny.devkit / "data"
    data.mkdir(parents=True)
    order = torch.randperm(len(wnids), generator=gen).tolist()
    id_of = {wnid_index: rank + 1 for rank, wnid_index in enumerate(order)}
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children"]
    synsets = np.zeros((len(wnids) + 1,), dtype=[(f, object) for f in fields])
    for rank, wnid_index in enumerate(order):
        wnid = wnids[wnid_index]
        synsets[rank] = (rank + 1, wnid, f"tiny class {wnid}", "generated", 0, np.zeros((0,)))
    children = np.arange(1, len(wnids) + 1, dtype=np.float64)
    synsets[-1] = (len(wnids) + 1, "n99999999", "entity", "a parent", len(wnids), children)
    savemat(str(data / "meta.mat"), {"synsets": synsets})
    truth = "".join(f"{id_of[label]}\n" for label in val_labels)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(truth)
    rows = ["ImageId,PredictionString"]
    for number, label in enumerate(val_labels, start=1):
        wnid = wnids[label]
        rows.append(f"ILSVRC2012_val_{number:08d},{wnid} 0 0 10 10 {wnid} 2 2 8 8 ")
    tiny.loc_solution.write_text("\n".join(rows) + "\n")
    mapping = "".join(f"{wnid} tiny class {wnid}\n" for wnid in wnids)
    tiny.synset_mapping.write_text(mapping)


def make_tiny_imagenet(
    root: str | Path,
    *,
    num_classes: int = 10,
    train_per_class: int = 20,
    val_per_class: int = 5,
    image_size: int = 48,
    flat_val: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> TinyImageNet:
    """Write a tiny ImageNet-layout dataset under ``root`` (which must not hold one yet)."""
    if num_classes < 2 or train_per_class < 1 or val_per_class < 1 or image_size < 8:
        raise ValueError(
            "need num_classes >= 2, train_per_class >= 1, val_per_class >= 1, image_size >= 8"
        )
    tiny = TinyImageNet(Path(root), fake_wnids(num_classes))
    if tiny.train.exists() or tiny.val.exists() or tiny.val_flat.exists():
        raise FileExistsError(f"{tiny.root}: already holds a dataset; pick an empty folder")
    gen = torch.Generator().manual_seed(seed)
    total = num_classes * (train_per_class + val_per_class)
    bar = tqdm(total=total, desc="generating", unit="img", disable=not progress)
    for label, wnid in enumerate(tiny.wnids):
        folder = tiny.train / wnid
        folder.mkdir(parents=True)
        for i in range(train_per_class):
            _write_jpeg(
                _class_image(label, num_classes, gen, image_size), folder / f"{wnid}_{i}.JPEG"
            )
            bar.update()
    ordered = torch.arange(num_classes).repeat_interleave(val_per_class)
    val_labels: list[int] = ordered[torch.randperm(len(ordered), generator=gen)].tolist()
    for number, label in enumerate(val_labels, start=1):
        folder = tiny.val_flat if flat_val else tiny.val / tiny.wnids[label]
        folder.mkdir(parents=True, exist_ok=True)
        image = _class_image(label, num_classes, gen, image_size)
        _write_jpeg(image, folder / f"ILSVRC2012_val_{number:08d}.JPEG")
        bar.update()
    bar.close()
    if flat_val:
        _write_devkit(tiny, val_labels, gen)
    return tiny
