"""Decode less: JPEGs decoded at a reduced DCT scale before RandomResizedCrop / Resize.

libjpeg-turbo (through ``simplejpeg``, which bundles it) can run the inverse DCT at 1/2, 1/4
or 1/8 of the full size: it then computes 4, 16 or 64 times fewer output pixels and the
colour conversion and resize that follow shrink alike. The crop box is drawn exactly as
torchvision's ``v2.RandomResizedCrop`` draws it (same RNG calls, on the full image size read
from the JPEG header); the largest power-of-two reduction that still leaves the crop at least
the output size in both directions is decoded, and the box is mapped onto it. Eval decodes
at the largest reduction whose shorter side still covers the resize size.

Files that are not baseline/progressive YCbCr or grey JPEGs (PNG, CMYK JPEG, ...) are decoded
in full by ``torchvision.io.decode_image`` and take the same steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import simplejpeg
import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import RandomResizedCrop as ClassicRandomResizedCrop
from torchvision.transforms.v2 import functional as F

DCT_FACTORS = (8, 4, 2, 1)
"""Reductions libjpeg-turbo decodes with its fast scaled IDCT, largest first."""


@dataclass(frozen=True)
class CropBox:
    """A crop of the full-size image: top, left, height, width in full-size pixels."""

    top: int
    left: int
    height: int
    width: int


def dct_factor(height: int, width: int, need_height: int, need_width: int) -> int:
    """The largest of 8, 4, 2, 1 leaving ``ceil(height / f) >= need_height`` and the same for
    the width (libjpeg-turbo rounds scaled sizes up)."""
    for factor in DCT_FACTORS:
        if -(-height // factor) >= need_height and -(-width // factor) >= need_width:
            return factor
    return 1


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` from the JPEG header, or None when libjpeg-turbo cannot decode the
    file to RGB (not a JPEG, CMYK/YCCK JPEG)."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("Gray", "YCbCr", "RGB"):
        return None
    return int(height), int(width)


def decode_scaled(data: bytes, size: tuple[int, int] | None, factor: int) -> torch.Tensor:
    """RGB uint8 ``[3, H, W]`` decoded at ``1/factor`` of ``size`` (full decode by
    torchvision when ``size`` is None: not a JPEG libjpeg-turbo decodes to RGB)."""
    if size is None:
        buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        image = decode_image(buffer, mode=ImageReadMode.RGB)
        return image[0] if image.ndim == 4 else image
    height, width = size
    array: np.ndarray = simplejpeg.decode_jpeg(
        data,
        colorspace="RGB",
        min_height=-(-height // factor),
        min_width=-(-width // factor),
    )
    return torch.from_numpy(array).permute(2, 0, 1)


def full_size(data: bytes) -> tuple[tuple[int, int] | None, torch.Tensor | None]:
    """The header size of a JPEG, or (None, the decoded image) for other files."""
    size = jpeg_size(data)
    if size is not None:
        return size, None
    image = decode_scaled(data, None, 1)
    return None, image


def map_box(box: CropBox, full: tuple[int, int], decoded: tuple[int, int]) -> CropBox:
    """``box`` in the pixels of an image decoded at ``decoded`` instead of ``full``: edges
    rounded to the nearest decoded pixel, at least one pixel, inside the image."""
    sy, sx = decoded[0] / full[0], decoded[1] / full[1]
    top = min(round(box.top * sy), decoded[0] - 1)
    left = min(round(box.left * sx), decoded[1] - 1)
    bottom = max(top + 1, min(round((box.top + box.height) * sy), decoded[0]))
    right = max(left + 1, min(round((box.left + box.width) * sx), decoded[1]))
    return CropBox(top, left, bottom - top, right - left)


def random_resized_crop_box(
    height: int, width: int, scale: Sequence[float], ratio: Sequence[float]
) -> CropBox:
    """The box ``v2.RandomResizedCrop`` draws for an image of this size (same torch RNG
    calls, torchvision's own sampler), without needing the pixels."""
    shape_only = torch.empty((1, 1, 1)).expand(3, height, width)
    top, left, h, w = ClassicRandomResizedCrop.get_params(shape_only, list(scale), list(ratio))
    return CropBox(int(top), int(left), int(h), int(w))


class ReducedDecodeTrain:
    """RandomResizedCrop(size, scale, ratio, interpolation) + RandomHorizontalFlip(p) applied
    to JPEG bytes, decoding at the largest DCT reduction that keeps the crop >= ``size``."""

    def __init__(
        self,
        size: int,
        *,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
        flip_prob: float = 0.5,
    ) -> None:
        self.size = size
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.interpolation = interpolation
        self.flip_prob = flip_prob

    def plan(self, height: int, width: int) -> tuple[CropBox, int, bool]:
        """Draw the crop box and the flip (torch RNG) and pick the DCT factor."""
        box = random_resized_crop_box(height, width, self.scale, self.ratio)
        flip = bool(torch.rand(1) < self.flip_prob)
        need_h = math.ceil(self.size * height / box.height)
        need_w = math.ceil(self.size * width / box.width)
        return box, dct_factor(height, width, need_h, need_w), flip

    def __call__(self, data: bytes) -> torch.Tensor:
        size, decoded = full_size(data)
        if size is None:
            assert decoded is not None
            full = (int(decoded.shape[-2]), int(decoded.shape[-1]))
            box, _, flip = self.plan(*full)
        else:
            full = size
            box, factor, flip = self.plan(*full)
            decoded = decode_scaled(data, full, factor)
            box = map_box(box, full, (int(decoded.shape[-2]), int(decoded.shape[-1])))
        out = F.resized_crop(
            decoded,
            box.top,
            box.left,
            box.height,
            box.width,
            [self.size, self.size],
            interpolation=self.interpolation,
            antialias=True,
        )
        return F.horizontal_flip(out) if flip else out


class ReducedDecodeEval:
    """Resize(shorter side ``resize_size``) + CenterCrop(``size``) applied to JPEG bytes,
    decoding at the largest DCT reduction whose shorter side still covers ``resize_size``."""

    def __init__(
        self,
        size: int,
        resize_size: int,
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
    ) -> None:
        self.size = size
        self.resize_size = resize_size
        self.interpolation = interpolation

    def factor(self, height: int, width: int) -> int:
        """The DCT reduction for an image of this size."""
        shorter = min(height, width)
        return dct_factor(shorter, shorter, min(self.resize_size, shorter), 0)

    def __call__(self, data: bytes) -> torch.Tensor:
        size, decoded = full_size(data)
        if size is not None:
            decoded = decode_scaled(data, size, self.factor(*size))
        assert decoded is not None
        out = F.resize(
            decoded, [self.resize_size], interpolation=self.interpolation, antialias=True
        )
        return F.center_crop(out, [self.size, self.size])
