"""Image sizes from file headers (no pixel decode), EXIF orientation respected."""

from __future__ import annotations

import os

from PIL import Image, UnidentifiedImageError

from visionforge_coco.problems import DataFormatError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = {5, 6, 7, 8}


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` of the image as displayed (EXIF rotations of 90 degrees swap them).

    Reads only the header; a missing, truncated-header or non-image file raises
    DataFormatError naming it.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except FileNotFoundError:
        raise DataFormatError(f"{os.fspath(path)}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataFormatError(f"{os.fspath(path)}: not a readable image ({err})") from None
    if orientation in _TRANSPOSED:
        return height, width
    return width, height


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)
