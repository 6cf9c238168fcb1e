"""Helpers that build tiny YOLO and COCO datasets in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

YoloFactory = Callable[..., Path]


def write_image(path: Path, width: int = 64, height: int = 48, exif_orientation: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if exif_orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(path, exif=exif)
    else:
        image.save(path)
    return path


@pytest.fixture
def image_writer() -> Callable[..., Path]:
    """``image_writer(path, width=64, height=48)`` writes a small noise PNG."""
    return write_image


@pytest.fixture
def make_yolo(tmp_path: Path) -> YoloFactory:
    """``make_yolo({"a.png": "0 0.5 0.5 0.2 0.2\\n"}, names=[...])`` -> YOLO root.

    A label value of None means no label file; ``extra_labels`` adds label files without images.
    """

    def build(
        labels: dict[str, str | None],
        names: tuple[str, ...] = ("cat", "dog"),
        split: str = "train",
        extra_labels: dict[str, str] | None = None,
        root_name: str = "yolo",
    ) -> Path:
        root = tmp_path / root_name
        for name, text in labels.items():
            write_image(root / "images" / split / name)
            if text is not None:
                label = (root / "labels" / split / name).with_suffix(".txt")
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text(text)
        for name, text in (extra_labels or {}).items():
            label = root / "labels" / split / name
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(text)
        listing = "\n".join(f"  - {n}" for n in names)
        (root / "data.yaml").write_text(f"path: .\n{split}: images/{split}\nnames:\n{listing}\n")
        return root

    return build
