"""Image sizes from file headers (no pixel decode), EXIF orientation respected."""

from __future__ import annotations

import io
import os

import simplejpeg
from PIL import Image, UnidentifiedImageError

from visionforge_coco.problems import DataFormatError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = {5, 6, 7, 8}
_JPEG_MAGIC = b"\xff\xd8\xff"
_APP1 = b"\xff\xe1"  # the segment holding EXIF and XMP, hence the orientation
HEAD_BYTES = 4096
"""JPEG bytes read for the header (libjpeg and OpenCV write about 600; larger ones, with EXIF
thumbnails or ICC profiles, are read from the file by Pillow)."""


def _read_head(path: str | os.PathLike[str]) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, HEAD_BYTES)
    finally:
        os.close(fd)


def _oriented(img: Image.Image) -> tuple[int, int]:
    width, height = img.size
    if img.getexif().get(_EXIF_ORIENTATION, 1) in _TRANSPOSED:
        return height, width
    return width, height


def _jpeg_head_size(head: bytes) -> tuple[int, int] | None:
    """Size from the first bytes of a JPEG, None when its header (up to the start of scan)
    does not fit in them or does not parse. Without an APP1 segment there is no orientation
    to read: libjpeg-turbo's header reader (simplejpeg) gives the size. With one, Pillow
    parses the header and its EXIF/XMP."""
    if _APP1 not in head:  # a false match in table bytes only takes the Pillow path
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(head)
        except ValueError:  # header not complete in ``head``, or unusual: ask Pillow
            pass
        else:
            return width, height
    try:
        with Image.open(io.BytesIO(head), formats=("JPEG",)) as img:
            if not img.tile:  # start of scan not reached: the header is longer than ``head``
                return None
            return _oriented(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` of the image as displayed (EXIF rotations of 90 degrees swap them).

    Reads only the header (for JPEG one read of its first bytes); a missing,
    truncated-header or non-image file raises DataFormatError naming it.
    """
    try:
        head = _read_head(path)
        if head.startswith(_JPEG_MAGIC):
            size = _jpeg_head_size(head)
            if size is not None:
                return size
        with Image.open(path) as img:
            return _oriented(img)
    except FileNotFoundError:
        raise DataFormatError(f"{os.fspath(path)}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataFormatError(f"{os.fspath(path)}: not a readable image ({err})") from None


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)
