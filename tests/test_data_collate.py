"""collate_with_lists: stacks what stacks, keeps variable-size targets per item."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from visionforge.data import collate_with_lists, detection_collate


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


def _sized_item(height: int, width: int, value: int, image_id: int) -> dict[str, object]:
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[0.0, 0.0, width / 2, height / 2]]),
        format="XYXY",
        canvas_size=(height, width),
    )
    return {
        "image": tv_tensors.Image(torch.full((3, height, width), value, dtype=torch.uint8)),
        "target": {
            "boxes": boxes,
            "labels": torch.tensor([1]),
            "image_id": image_id,
            "orig_size": torch.tensor([height * 2, width * 2]),
        },
    }


def test_detection_collate_pads_to_largest_size_with_mask() -> None:
    batch = detection_collate([_sized_item(5, 9, 7, 1), _sized_item(8, 4, 9, 2)])
    image, mask = batch["image"], batch["mask"]
    assert image.shape == (2, 3, 8, 9) and image.dtype == torch.uint8
    assert mask.shape == (2, 8, 9) and mask.dtype == torch.bool
    assert bool((image[0, :, :5, :9] == 7).all()) and bool((image[0, :, 5:] == 0).all())
    assert bool((image[1, :, :8, :4] == 9).all()) and bool((image[1, :, :, 4:] == 0).all())
    assert int((~mask[0]).sum()) == 5 * 9 and bool(mask[0, 5:].all()) and not mask[0, :5].any()
    assert int((~mask[1]).sum()) == 8 * 4 and bool(mask[1, :, 4:].all())
    first, second = batch["target"]
    assert first["size"] == (5, 9) and first["orig_size"] == (10, 18)
    assert second["size"] == (8, 4) and second["image_id"] == 2
    assert isinstance(first["boxes"], tv_tensors.BoundingBoxes)
    assert first["boxes"].canvas_size == (5, 9)


def test_detection_collate_rounds_padding_up_to_a_multiple() -> None:
    batch = detection_collate(
        [_sized_item(33, 40, 1, 1), _sized_item(20, 65, 1, 2)], pad_to_multiple=32
    )
    assert batch["image"].shape[-2:] == (64, 96)
    assert int((~batch["mask"][1]).sum()) == 20 * 65


def test_detection_collate_rejects_mixed_channels_and_missing_targets() -> None:
    gray = {**_sized_item(4, 4, 1, 2), "image": tv_tensors.Image(torch.zeros(1, 4, 4))}
    with pytest.raises(ValueError, match="item 1 has an image of shape"):
        detection_collate([_sized_item(4, 4, 1, 1), gray])
    with pytest.raises(ValueError, match="needs 'image' and 'target'"):
        detection_collate([{"image": torch.zeros(3, 4, 4)}])
