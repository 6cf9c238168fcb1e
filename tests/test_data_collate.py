"""collate_with_lists: stacks what stacks, keeps variable-size targets per item."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from visionforge.data import collate_with_lists


def detection_item(num_boxes: int, size: tuple[int, int], image_id: int) -> dict[str, object]:
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[1.0, 2.0, 5.0, 6.0]]).repeat(num_boxes, 1), format="XYXY", canvas_size=size
    )
    return {
        "image": tv_tensors.Image(torch.zeros(3, *size)),
        "target": {
            "boxes": boxes,
            "labels": torch.zeros(num_boxes, dtype=torch.int64),
            "image_id": image_id,
        },
    }


def test_classification_items_collate_like_default_collate() -> None:
    items = [{"image": torch.full((3, 4, 4), float(i)), "label": i} for i in range(3)]
    batch = collate_with_lists(items)
    assert batch["image"].shape == (3, 3, 4, 4)
    assert torch.equal(batch["label"], torch.tensor([0, 1, 2]))


def test_detection_targets_stay_per_item() -> None:
    items = [detection_item(2, (8, 8), 10), detection_item(0, (8, 8), 11)]
    batch = collate_with_lists(items)
    assert batch["image"].shape == (2, 3, 8, 8)
    assert isinstance(batch["target"], list) and len(batch["target"]) == 2
    assert batch["target"][0]["boxes"].shape == (2, 4)
    assert isinstance(batch["target"][0]["boxes"], tv_tensors.BoundingBoxes)
    assert batch["target"][1]["boxes"].shape == (0, 4)
    assert [t["image_id"] for t in batch["target"]] == [10, 11]


def test_images_of_different_sizes_become_a_list() -> None:
    items = [detection_item(1, (8, 8), 0), detection_item(1, (6, 10), 1)]
    batch = collate_with_lists(items)
    assert [tuple(image.shape) for image in batch["image"]] == [(3, 8, 8), (3, 6, 10)]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"empty"):
        collate_with_lists([])
    with pytest.raises(ValueError, match=r"item 1 has keys"):
        collate_with_lists([{"image": torch.zeros(1)}, {"img": torch.zeros(1)}])
