"""Moving collated batches to the training device and preparing their images there."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from visionforge.data.transforms import device_normalize
from visionforge.errors import ConfigError


def move_to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor inside dicts/lists/tuples to ``device`` (tv_tensors keep their type)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return {k: move_to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(move_to_device(v, device, non_blocking) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(v, device, non_blocking) for v in obj)
    return obj


class ImagePreparer:
    """Device-side image steps applied to ``batch["image"]``: uint8 normalization, channels_last."""

    def __init__(
        self, normalize: tuple[list[float], list[float]] | None, channels_last: bool
    ) -> None:
        self.mean: list[float] | None = normalize[0] if normalize is not None else None
        self.std: list[float] | None = normalize[1] if normalize is not None else None
        self.channels_last = channels_last

    @property
    def active(self) -> bool:
        return self.mean is not None or self.channels_last

    def __call__(self, batch: Mapping[str, Any]) -> Mapping[str, Any]:
        image = batch.get("image") if isinstance(batch, Mapping) else None
        if not self.active or image is None:
            return batch
        if isinstance(image, (list, tuple)):  # detection: images of different sizes
            return {**batch, "image": type(image)(self._prepare(i) for i in image)}
        return {**batch, "image": self._prepare(image)}

    def _prepare(self, image: torch.Tensor) -> torch.Tensor:
        if self.mean is not None and self.std is not None:
            if image.dtype != torch.uint8:
                raise ConfigError(
                    "data.normalize_on_device is set but the dataset yields "
                    f"{image.dtype} images; make the dataset keep uint8 (normalize: false)"
                )
            image = device_normalize(image, self.mean, self.std)
        if self.channels_last and image.ndim == 4:
            image = image.contiguous(memory_format=torch.channels_last)
        return image
