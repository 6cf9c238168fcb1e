"""Image sizes from headers: the JPEG fast path agrees with Pillow in every case."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from visionforge_coco.imageinfo import HEAD_BYTES, image_size
from visionforge_coco.problems import DataFormatError


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, (50, 30)),  # no APP1: libjpeg-turbo's header reader
        ({"exif": _exif(6)}, (30, 50)),  # APP1 with a 90-degree rotation: Pillow
        ({"exif": _exif(3)}, (50, 30)),  # 180 degrees keeps the size
        ({"icc_profile": os.urandom(HEAD_BYTES * 2)}, (50, 30)),  # header longer than the head
        ({"icc_profile": os.urandom(HEAD_BYTES * 2), "exif": _exif(8)}, (30, 50)),
    ],
)
def test_jpeg_sizes(tmp_path: Path, options: dict[str, object], expected: tuple[int, int]) -> None:
    path = tmp_path / "a.jpg"
    Image.new("RGB", (50, 30), "red").save(path, **options)  # type: ignore[arg-type]
    assert image_size(path) == expected


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_other_jpeg_modes_and_png(tmp_path: Path, mode: str) -> None:
    Image.new(mode, (7, 5)).save(tmp_path / "a.jpg")
    Image.new("RGB", (7, 5)).save(tmp_path / "a.png")
    assert image_size(tmp_path / "a.jpg") == image_size(tmp_path / "a.png") == (7, 5)


def test_truncated_and_missing_files_name_the_file(tmp_path: Path) -> None:
    Image.new("RGB", (50, 30)).save(tmp_path / "a.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes((tmp_path / "a.jpg").read_bytes()[:100])
    with pytest.raises(DataFormatError, match=r"cut\.jpg: not a readable image"):
        image_size(cut)
    with pytest.raises(DataFormatError, match=r"gone\.jpg: image file not found"):
        image_size(tmp_path / "gone.jpg")
