"""Batches on the device: recursive moves and device-side image preparation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors

from visionforge.engine.batch import ImagePreparer, move_to_device
from visionforge.engine.output import RunOutput
from visionforge.errors import ConfigError


def test_move_keeps_structure_and_tv_tensor_types() -> None:
    boxes = tv_tensors.BoundingBoxes([[0, 0, 2, 2]], format="XYXY", canvas_size=(4, 4))
    batch = {"image": torch.zeros(1, 3, 4, 4), "targets": [{"boxes": boxes, "id": 3}], "n": (1,)}
    moved = move_to_device(batch, torch.device("cpu"))
    assert isinstance(moved["targets"][0]["boxes"], tv_tensors.BoundingBoxes)
    assert moved["targets"][0]["boxes"].canvas_size == (4, 4)
    assert moved["targets"][0]["id"] == 3 and moved["n"] == (1,)


def test_uint8_images_are_normalized_and_made_channels_last() -> None:
    mean, std = [0.5, 0.25, 0.0], [0.5, 0.25, 1.0]
    prepare = ImagePreparer((mean, std), channels_last=True)
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    out = prepare({"image": images, "label": torch.tensor([0, 1])})["image"]
    expected = (images.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(
        3, 1, 1
    )
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last)
    listed = prepare({"image": [images[0], images[1, :, :2]]})["image"]
    torch.testing.assert_close(listed[0], expected[0])
    assert listed[1].shape == (3, 2, 4)
    with pytest.raises(ConfigError, match="normalize_on_device"):
        prepare({"image": images.float()})


def test_file_url_output_is_written_in_place(tmp_path: Path) -> None:
    out = RunOutput(f"file://{tmp_path}/run")
    assert not out.remote and out.local_dir == tmp_path / "run"
    assert out.target("last.ckpt") == str(tmp_path / "run" / "last.ckpt")
    out.local("a.txt").write_text("x")
    out.copy("a.txt", "b.txt")
    assert out.fetch("b.txt") == str(tmp_path / "run" / "b.txt")
    assert out.fetch("missing.txt") is None
