"""Classification datasets: class-per-folder images (local or fsspec URL) and generated images."""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image

from visionforge import storage
from visionforge.components.configs import ImageFolderConfig, SyntheticClassificationConfig
from visionforge.data.transforms import classification_transforms
from visionforge.errors import ConfigError, StorageError

_CPP_LOCATION = re.compile(r"^\w+, \S+\.cpp:\d+, ")  # torchvision's "fn, file.cpp:NN, " prefix

Transform = Callable[[tv_tensors.Image], torch.Tensor]


class ImageFolder(Dataset[dict[str, Any]]):
    """Images laid out as ``root/<class>/**/<image>``; classes are the sorted folder names.

    ``root`` is a local path or an fsspec URL (``s3://``, ``memory://``, ...). Images are
    decoded with ``torchvision.io.decode_image`` as RGB uint8 and passed through
    ``transform``. Items are ``{"image": tv_tensors.Image, "label": int}``. Hidden folders
    (``.name``) are not classes; files without one of ``extensions`` are skipped with a
    warning.
    """

    def __init__(
        self,
        root: str,
        transform: Transform | None = None,
        extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".gif"),
    ) -> None:
        self.root = root
        self.transform = transform
        self._remote = storage.is_remote(root)
        self._fs, base = storage.filesystem(root)
        if not self._fs.isdir(base):
            raise StorageError(f"{root}: dataset root not found (expected root/<class>/<image>)")
        class_dirs = self._class_dirs(base)
        if not class_dirs:
            raise ConfigError(
                f"{root}: no class folders; lay images out as root/<class name>/<image>"
            )
        self.class_names = [d.rstrip("/").rsplit("/", 1)[-1] for d in class_dirs]
        self.class_to_idx = {name: i for i, name in enumerate(self.class_names)}
        suffixes = tuple(e.lower() for e in extensions)
        paths: list[str] = []
        labels: list[int] = []
        skipped: list[str] = []
        for label, class_dir in enumerate(class_dirs):
            files = self._files_under(class_dir)
            images = [f for f in files if f.lower().endswith(suffixes)]
            skipped += [f for f in files if not f.lower().endswith(suffixes)]
            if not images:
                raise ConfigError(
                    f"{self._display(class_dir)}: class folder has no images with extensions "
                    f"{', '.join(extensions)}; add images or remove the folder"
                )
            paths += images
            labels += [label] * len(images)
        if skipped:
            warnings.warn(
                f"{root}: skipped {len(skipped)} file(s) without an image extension "
                f"({', '.join(extensions)}), e.g. {self._display(skipped[0])}",
                stacklevel=2,
            )
        # numpy arrays, not lists of Python objects: DataLoader workers forked from this
        # process then share the memory instead of copying it page by page on access
        self._paths = np.array(paths)
        self._labels = np.array(labels, dtype=np.int64)

    def _class_dirs(self, base: str) -> list[str]:
        """Sorted non-hidden sub-folders of ``base``."""
        if self._remote:
            entries = self._fs.ls(base, detail=True)
            dirs = [e["name"].rstrip("/") for e in entries if e["type"] == "directory"]
        else:
            with os.scandir(base) as scan:
                dirs = [e.path for e in scan if e.is_dir()]
        return sorted(d for d in dirs if not d.rsplit("/", 1)[-1].startswith("."))

    def _files_under(self, folder: str) -> list[str]:
        """Sorted files anywhere under ``folder`` (os.walk locally: much faster than fsspec)."""
        if self._remote:
            return sorted(self._fs.find(folder))
        return sorted(os.path.join(d, f) for d, _, files in os.walk(folder) for f in files)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labels(self) -> list[int]:
        """The label of every sample, in sample order."""
        return self._labels.tolist()

    @property
    def samples(self) -> list[tuple[str, int]]:
        """``(path, label)`` of every sample (paths without the URL scheme for remote roots)."""
        return list(zip(self._paths.tolist(), self._labels.tolist(), strict=True))

    def _display(self, path: str) -> str:
        """``path`` as the user wrote the root: a URL for remote roots."""
        return self._fs.unstrip_protocol(path) if self._remote else path

    def __len__(self) -> int:
        return len(self._paths)

    def load_image(self, index: int) -> tv_tensors.Image:
        """Decode sample ``index`` as an RGB uint8 image ``[3, H, W]``."""
        path = str(self._paths[index])
        try:
            if self._remote:
                data = torch.frombuffer(bytearray(self._fs.cat_file(path)), dtype=torch.uint8)
                image = decode_image(data, mode=ImageReadMode.RGB)
            else:
                image = decode_image(path, mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError) as err:
            message = _CPP_LOCATION.sub("", str(err).strip().splitlines()[0]) if str(err) else ""
            raise StorageError(
                f"{self._display(path)}: cannot decode image ({message or 'unreadable'}); "
                "replace or remove the file"
            ) from None
        except FileNotFoundError:
            raise StorageError(f"{self._display(path)}: file not found") from None
        if image.ndim == 4:  # an animated GIF decodes to [frames, C, H, W]: keep the first
            image = image[0]
        return tv_tensors.Image(image)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image: torch.Tensor = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "label": int(self._labels[index])}


def build_image_folder(cfg: ImageFolderConfig) -> ImageFolder:
    """The ``image_folder`` dataset with the transform preset named by ``cfg.augment``."""
    transform = classification_transforms(
        cfg.image_size,
        cfg.augment,
        resize_ratio=cfg.resize_ratio,
        mean=cfg.mean,
        std=cfg.std,
        normalize=cfg.normalize,
    )
    return ImageFolder(cfg.root, transform=transform, extensions=cfg.extensions)


SHAPES = ("disk", "square", "ring", "cross")


def class_colour(label: int, num_classes: int, channels: int) -> torch.Tensor:
    """The foreground colour of ``label``: evenly spaced hues (a ramp for one channel)."""
    if channels == 1:
        return torch.tensor([0.25 + 0.75 * label / (num_classes - 1)])
    phase = label / num_classes + torch.arange(channels) / channels
    return 0.5 + 0.5 * torch.cos(2 * math.pi * phase)


class SyntheticClassification(Dataset[dict[str, Any]]):
    """Deterministic generated images whose class is visible in colour and shape.

    Item ``index`` has label ``index % num_classes``: a shape (disk, square, ring, cross by
    ``label % 4``) in the class colour at a random position and size on a dark noisy
    background. Its randomness comes from a generator seeded by ``(seed, index)``, so items
    do not depend on access order and the global RNG is never touched. Images are float
    tensors normalized to about [-1, 1] (mean and std 0.5).
    """

    def __init__(
        self,
        num_classes: int = 4,
        num_samples: int = 256,
        image_size: int = 32,
        channels: int = 3,
        seed: int = 0,
    ) -> None:
        if num_classes < 2:
            raise ConfigError(f"num_classes: need at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.num_samples = num_samples
        self.image_size = image_size
        self.channels = channels
        self.seed = seed
        self.mean = (0.5,) * channels
        self.std = (0.5,) * channels
        self.class_names = [f"{SHAPES[c % len(SHAPES)]}_{c}" for c in range(num_classes)]
        centres = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size
        self._ys, self._xs = torch.meshgrid(centres, centres, indexing="ij")
        self.labels = [i % num_classes for i in range(num_samples)]

    def __len__(self) -> int:
        return self.num_samples

    def _generator(self, index: int) -> torch.Generator:
        # torch's CPU generator keeps 32 bits of a seed: mix (seed, index) into them
        entropy = [self.seed & 0xFFFF_FFFF_FFFF_FFFF, index]
        state = np.random.SeedSequence(entropy).generate_state(1)
        return torch.Generator().manual_seed(int(state[0]))

    def _mask(self, label: int, g: torch.Generator) -> torch.Tensor:
        cx, cy = (0.3 + 0.4 * torch.rand(2, generator=g)).tolist()
        radius = float(0.18 + 0.12 * torch.rand(1, generator=g))
        dx, dy = (self._xs - cx).abs(), (self._ys - cy).abs()
        kind = SHAPES[label % len(SHAPES)]
        if kind == "disk":
            return dx**2 + dy**2 < radius**2
        if kind == "square":
            return torch.maximum(dx, dy) < 0.85 * radius
        if kind == "ring":
            dist = (dx**2 + dy**2).sqrt()
            return (dist < radius) & (dist > 0.55 * radius)
        bar = 0.35 * radius
        return ((dx < bar) & (dy < radius)) | ((dy < bar) & (dx < radius))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        label = self.labels[index]
        g = self._generator(index)
        size, channels = self.image_size, self.channels
        mask = self._mask(label, g)
        background = 0.1 + 0.25 * torch.rand(channels, 1, 1, generator=g)
        colour = class_colour(label, self.num_classes, channels)[:, None, None]
        colour = colour * (0.8 + 0.2 * torch.rand(1, generator=g))
        image = torch.where(mask, colour, background)
        image = image + 0.08 * torch.randn(channels, size, size, generator=g)
        image = (image.clamp(0.0, 1.0) - 0.5) / 0.5
        return {"image": tv_tensors.Image(image), "label": label}


def build_synthetic_classification(cfg: SyntheticClassificationConfig) -> SyntheticClassification:
    """The ``synthetic_classification`` dataset."""
    return SyntheticClassification(
        num_classes=cfg.num_classes,
        num_samples=cfg.num_samples,
        image_size=cfg.image_size,
        channels=cfg.channels,
        seed=cfg.seed,
    )
