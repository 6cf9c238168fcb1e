"""The ``imagenet_folder`` dataset: class-per-folder JPEGs decoded only as much as needed."""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from visionforge.components.datasets import ImageFolder
from visionforge.config import LoaderConfig
from visionforge.errors import StorageError
from visionforge.interfaces import BatchLoader
from visionforge_resnet.configs import ImageNetFolderConfig
from visionforge_resnet.reduced_decode import ReducedDecodeEval, ReducedDecodeTrain

BytesTransform = ReducedDecodeTrain | ReducedDecodeEval


class ImageNetFolder(ImageFolder):
    """The ``imagenet_folder`` dataset: :class:`~visionforge.components.datasets.ImageFolder`
    that knows its augmentation (``config``) and builds the loader ``data.loader`` asks for
    (:class:`~visionforge.interfaces.LoaderProvider`: DALI, or decoding on the device)."""

    def __init__(
        self,
        root: str,
        config: ImageNetFolderConfig,
        *,
        transform: v2.Transform | None = None,
    ) -> None:
        super().__init__(root, transform=transform, extensions=config.extensions)
        self.config = config

    def read_bytes(self, index: int) -> bytes:
        """The encoded file of sample ``index``."""
        path = str(self._paths[index])
        try:
            if self._remote:
                return bytes(self._fs.cat_file(path))
            with open(path, "rb") as file:
                return file.read()
        except FileNotFoundError:
            raise StorageError(f"{self._display(path)}: file not found") from None

    def display_path(self, index: int) -> str:
        """The file of sample ``index`` as the user wrote the root (a URL when remote)."""
        return self._display(str(self._paths[index]))

    def label_of(self, index: int) -> int:
        return int(self._labels[index])

    def make_loader(
        self,
        seeded: Any,
        sampler: Any,
        batch_size: int,
        cfg: LoaderConfig,
        seed: int,
        *,
        pin_memory: bool,
        device: torch.device,
    ) -> BatchLoader | None:
        """DALI for ``backend: dali``, device decoding for ``decoder: nvjpeg``, else None
        (the standard DataLoader); falls back as ``data.loader.backend_fallback`` says."""
        from visionforge_resnet.backends import build_loader

        return build_loader(
            self, seeded, sampler, batch_size, cfg, seed, pin_memory=pin_memory, device=device
        )


class ReducedDecodeImageFolder(ImageNetFolder):
    """:class:`ImageNetFolder` whose items are decoded from the file's bytes by a
    :class:`ReducedDecodeTrain` / :class:`ReducedDecodeEval` step (crop, resize and flip
    included), then optionally normalized."""

    def __init__(
        self,
        root: str,
        config: ImageNetFolderConfig,
        decode: BytesTransform,
        *,
        normalize: v2.Transform | None = None,
    ) -> None:
        super().__init__(root, config)
        self.decode = decode
        self.normalize = normalize

    def __getitem__(self, index: int) -> dict[str, Any]:
        data = self.read_bytes(index)
        try:
            image: torch.Tensor = tv_tensors.Image(self.decode(data))
        except (RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else "unreadable"
            raise StorageError(
                f"{self._display(str(self._paths[index]))}: cannot decode image ({first}); "
                "replace or remove the file"
            ) from None
        if self.normalize is not None:
            image = self.normalize(image)
        return {"image": image, "label": int(self._labels[index])}


def _interpolation(name: str) -> InterpolationMode:
    return InterpolationMode(name)


def reference_transforms(cfg: ImageNetFolderConfig) -> v2.Compose:
    """The transforms v2 pipeline on fully decoded uint8 images that ``decoder: reduced``
    reproduces (the ``decoder: full`` pipeline)."""
    interpolation = _interpolation(cfg.interpolation)
    steps: list[v2.Transform]
    if cfg.augment == "train":
        steps = [
            v2.RandomResizedCrop(
                cfg.image_size,
                scale=cfg.scale,
                ratio=cfg.ratio,
                interpolation=interpolation,
                antialias=True,
            ),
            v2.RandomHorizontalFlip(cfg.flip_prob),
        ]
    elif cfg.augment == "eval":
        steps = [
            v2.Resize(round(cfg.image_size / cfg.resize_ratio), interpolation, antialias=True),
            v2.CenterCrop(cfg.image_size),
        ]
    else:
        steps = [v2.Resize((cfg.image_size, cfg.image_size), interpolation, antialias=True)]
    steps += _normalize_steps(cfg)
    return v2.Compose(steps)


def _normalize_steps(cfg: ImageNetFolderConfig) -> list[v2.Transform]:
    if not cfg.normalize:
        return []
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(cfg.mean), list(cfg.std))]


def build_imagenet_folder(cfg: ImageNetFolderConfig) -> ImageNetFolder:
    """The ``imagenet_folder`` dataset (``decoder: reduced``, ``full`` or ``nvjpeg``; items
    of ``nvjpeg`` read directly, or when it falls back, decode as ``reduced``)."""
    if cfg.decoder == "full" or cfg.augment == "none":
        return ImageNetFolder(cfg.root, cfg, transform=reference_transforms(cfg))
    interpolation = _interpolation(cfg.interpolation)
    decode: BytesTransform
    if cfg.augment == "train":
        decode = ReducedDecodeTrain(
            cfg.image_size,
            scale=cfg.scale,
            ratio=cfg.ratio,
            interpolation=interpolation,
            flip_prob=cfg.flip_prob,
        )
    else:
        resize = round(cfg.image_size / cfg.resize_ratio)
        decode = ReducedDecodeEval(cfg.image_size, resize, interpolation)
    steps = _normalize_steps(cfg)
    return ReducedDecodeImageFolder(
        cfg.root, cfg, decode, normalize=v2.Compose(steps) if steps else None
    )
