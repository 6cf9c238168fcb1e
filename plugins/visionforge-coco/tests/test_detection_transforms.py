"""The DETR transform recipe: boxes follow the pixels through flip, crop and resize, and
sizes stay in the configured ranges."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors

from visionforge.data import detection_collate
from visionforge_coco.configs import DetectionTransformConfig
from visionforge_coco.transforms import RandomSizeCrop, detection_transforms

SMALL = {
    "multiscale": True,
    "scales": [64, 96, 128],
    "crop_scales": [80, 100],
    "crop_size": (40, 70),
    "eval_size": 96,
    "max_side": 160,
}


def painted_item(height: int, width: int, box: tuple[int, int, int, int]) -> dict[str, Any]:
    """A black image with ``box`` (x0, y0, x1, y1 pixels) painted white, and that box."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    x0, y0, x1, y1 = box
    image[:, y0:y1, x0:x1] = 255
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([box], dtype=torch.float32), format="XYXY", canvas_size=(height, width)
    )
    target = {"boxes": boxes, "labels": torch.tensor([2]), "image_id": 1}
    return {"image": tv_tensors.Image(image), "target": target}


def bright_extent(image: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the pixels brighter than half, or None."""
    ys, xs = torch.nonzero(image[0] > 127, as_tuple=True)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def check_box_follows_pixels(out: dict[str, Any]) -> None:
    boxes = out["target"]["boxes"]
    extent = bright_extent(out["image"])
    flat = boxes.as_subclass(torch.Tensor)
    if len(boxes) == 0 or bool(((flat[:, 2:] - flat[:, :2]) < 1).any()):
        # cropped away (removed, or clamped to nothing): at most a sliver of pixels remains
        assert extent is None or min(extent[2] - extent[0], extent[3] - extent[1]) <= 2
        return
    assert extent is not None
    assert out["target"]["labels"].tolist() == [2]
    assert boxes.canvas_size == tuple(out["image"].shape[-2:])
    torch.testing.assert_close(
        boxes[0].as_subclass(torch.Tensor), torch.tensor(extent).float(), atol=2.0, rtol=0
    )


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    height=st.integers(90, 200),
    width=st.integers(90, 200),
    corner=st.tuples(st.floats(0, 0.6), st.floats(0, 0.6)),
)
def test_train_recipe_box_follows_flip_crop_and_resize(
    seed: int, height: int, width: int, corner: tuple[float, float]
) -> None:
    x0, y0 = int(corner[0] * width), int(corner[1] * height)
    box = (x0, y0, x0 + width // 3, y0 + height // 3)
    transform = detection_transforms(DetectionTransformConfig(augment="train", **SMALL))
    assert transform is not None
    torch.manual_seed(seed)
    out = transform(painted_item(height, width, box))
    check_box_follows_pixels(out)
    h, w = out["image"].shape[-2:]
    assert max(h, w) <= SMALL["max_side"]
    # the last resize sets the shorter side to a scale (torchvision truncates: -1 px) unless
    # the longer side hits max_side
    near_scale = any(0 <= s - min(h, w) <= 1 for s in SMALL["scales"])
    assert near_scale or max(h, w) >= SMALL["max_side"] - 1


def test_train_recipe_takes_both_branches_and_flips() -> None:
    transform = detection_transforms(DetectionTransformConfig(augment="train", **SMALL))
    assert transform is not None
    item = painted_item(120, 160, (0, 0, 40, 40))  # left edge: a flip moves it right
    aspects, flipped = set(), 0
    for seed in range(40):
        torch.manual_seed(seed)
        out = transform(item)
        h, w = out["image"].shape[-2:]
        aspects.add(round(w / h, 1))
        boxes = out["target"]["boxes"]
        if len(boxes) and float(boxes[0, 2]) == pytest.approx(w, abs=1):
            flipped += 1
    assert len(aspects) > 2, "the crop branch changes the aspect ratio; only resizes were seen"
    assert 5 <= flipped <= 35


def test_random_size_crop_sides_in_range_and_box_translated() -> None:
    crop = RandomSizeCrop(30, 50)
    item = painted_item(80, 100, (20, 10, 60, 70))
    for seed in range(30):
        torch.manual_seed(seed)
        out = crop(item)
        h, w = out["image"].shape[-2:]
        assert 30 <= h <= 50 and 30 <= w <= 50
        check_box_follows_pixels(out)
    small = painted_item(20, 25, (0, 0, 5, 5))
    assert crop(small)["image"].shape[-2:] == (20, 25)  # smaller than min_size: kept whole


def test_eval_recipe_resizes_shorter_side_with_max() -> None:
    transform = detection_transforms(DetectionTransformConfig(augment="eval", **SMALL))
    assert transform is not None
    out = transform(painted_item(100, 120, (10, 20, 50, 80)))
    assert tuple(out["image"].shape[-2:]) == (96, 115)
    check_box_follows_pixels(out)
    wide = transform(painted_item(50, 200, (10, 10, 30, 30)))
    assert tuple(wide["image"].shape[-2:]) == (40, 160)  # 96 would make the long side 384
    check_box_follows_pixels(wide)


def test_image_size_and_multiscale_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        DetectionTransformConfig(image_size=64, multiscale=True)


def test_multiscale_batches_pad_to_a_multiple_of_32() -> None:
    transform = detection_transforms(DetectionTransformConfig(augment="train", **SMALL))
    assert transform is not None
    items = []
    for seed, size in enumerate([(90, 130), (150, 100)]):
        torch.manual_seed(seed)
        items.append(transform(painted_item(*size, (5, 5, 40, 40))))
    batch = detection_collate(items, pad_to_multiple=32)
    assert batch["image"].shape[-2] % 32 == 0 and batch["image"].shape[-1] % 32 == 0
    for index, item in enumerate(items):
        assert batch["target"][index]["size"] == tuple(item["image"].shape[-2:])
