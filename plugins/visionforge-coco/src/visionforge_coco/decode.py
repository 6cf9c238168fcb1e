"""Full image decoding with torchvision.io (EXIF orientation applied)."""

from __future__ import annotations

import os

import torch
from torchvision.io import ImageReadMode, decode_image

from visionforge import storage
from visionforge_coco.problems import DataFormatError


def read_image(
    path: str | os.PathLike[str], mode: ImageReadMode = ImageReadMode.RGB
) -> torch.Tensor:
    """Decode an image file or URL to a uint8 CHW tensor; corrupt files raise DataFormatError."""
    data = storage.read_bytes(path)
    try:
        return decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8),
            mode=mode,
            apply_exif_orientation=True,
        )
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1].split(", ")[-1]
        raise DataFormatError(f"{os.fspath(path)}: cannot decode image ({reason})") from None


def decoded_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) after a full decode."""
    image = read_image(path, ImageReadMode.UNCHANGED)
    return int(image.shape[-1]), int(image.shape[-2])
