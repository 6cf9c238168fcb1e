"""Reduced-DCT decoding keeps torchvision's RandomResizedCrop / Resize + CenterCrop semantics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import simplejpeg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.io import encode_jpeg, encode_png
from torchvision.transforms import v2

import visionforge
from visionforge.config import recipe_from_dict
from visionforge.engine.data import SeededDataset
from visionforge_resnet.datasets import ReducedDecodeImageFolder
from visionforge_resnet.presets import imagenet_recipe
from visionforge_resnet.reduced_decode import (
    CropBox,
    ReducedDecodeEval,
    ReducedDecodeTrain,
    dct_factor,
    decode_scaled,
    jpeg_size,
    map_box,
    random_resized_crop_box,
)


def smooth_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A photo-like uint8 image: smooth colour field, dark left third (shows flips)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand((1, 3, 6, 8), generator=g)
    image = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear")[0]
    image[:, :, : width // 3] *= 0.2
    return (image * 255).round().to(torch.uint8)


def jpeg(height: int, width: int, seed: int = 0) -> bytes:
    return bytes(encode_jpeg(smooth_image(height, width, seed), quality=95).numpy().tobytes())


def reference_train(size: int) -> v2.Compose:
    return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 3000),
    width=st.integers(1, 3000),
    seed=st.integers(0, 2**31 - 1),
)
def test_crop_box_is_the_one_torchvision_draws_and_lies_inside(
    height: int, width: int, seed: int
) -> None:
    torch.manual_seed(seed)
    box = random_resized_crop_box(height, width, (0.08, 1.0), (3 / 4, 4 / 3))
    torch.manual_seed(seed)
    shape_only = torch.empty((1, 1, 1)).expand(3, height, width)
    params = v2.RandomResizedCrop(224).make_params([shape_only])
    assert (box.top, box.left, box.height, box.width) == (
        params["top"],
        params["left"],
        params["height"],
        params["width"],
    )
    assert box.top >= 0 and box.top + box.height <= height
    assert box.left >= 0 and box.left + box.width <= width


@settings(max_examples=100, deadline=None)
@given(
    height=st.integers(1, 4000),
    width=st.integers(1, 4000),
    data=st.data(),
)
def test_mapped_box_stays_inside_the_decoded_image(
    height: int, width: int, data: st.DataObject
) -> None:
    top = data.draw(st.integers(0, height - 1))
    left = data.draw(st.integers(0, width - 1))
    box = CropBox(
        top, left, data.draw(st.integers(1, height - top)), data.draw(st.integers(1, width - left))
    )
    factor = data.draw(st.sampled_from([1, 2, 4, 8]))
    decoded = (-(-height // factor), -(-width // factor))
    mapped = map_box(box, (height, width), decoded)
    assert mapped.height >= 1 and mapped.width >= 1
    assert mapped.top >= 0 and mapped.top + mapped.height <= decoded[0]
    assert mapped.left >= 0 and mapped.left + mapped.width <= decoded[1]
    # edges within one decoded pixel of the exact scaled edges (a sub-pixel box: 1 pixel)
    scale = decoded[0] / height
    assert abs(mapped.top - box.top * scale) <= 1
    if box.height * scale >= 1:
        assert abs(mapped.top + mapped.height - (box.top + box.height) * scale) <= 1
    else:
        assert mapped.height == 1


@settings(max_examples=100, deadline=None)
@given(height=st.integers(1, 5000), width=st.integers(1, 5000), need=st.integers(1, 600))
def test_dct_factor_is_the_largest_that_still_covers(height: int, width: int, need: int) -> None:
    need_h, need_w = min(need, height), min(need, width)
    factor = dct_factor(height, width, need_h, need_w)
    assert -(-height // factor) >= need_h and -(-width // factor) >= need_w
    if factor < 8:
        bigger = factor * 2
        assert -(-height // bigger) < need_h or -(-width // bigger) < need_w


def test_simplejpeg_decodes_exactly_at_the_chosen_factor() -> None:
    data = jpeg(375, 500)
    assert jpeg_size(data) == (375, 500)
    for factor in (1, 2, 4, 8):
        image = decode_scaled(data, (375, 500), factor)
        assert image.shape == (3, -(-375 // factor), -(-500 // factor))
        assert image.dtype == torch.uint8


def test_a_large_crop_decodes_at_reduced_scale() -> None:
    train = ReducedDecodeTrain(224, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3))
    box, factor, _ = train.plan(1200, 1600)
    assert (box.height, box.width) == (1200, 1600)
    assert factor == 4  # 1600/224 = 7.1 and 1200/224 = 5.4: 1/4 still covers, 1/8 not
    small_crop = ReducedDecodeTrain(224, scale=(0.08, 0.08))
    _, factor, _ = small_crop.plan(375, 500)
    assert factor == 1


@pytest.mark.parametrize("size", [(375, 500), (500, 375), (1200, 1600), (97, 61)])
def test_train_output_matches_the_reference_pipeline(size: tuple[int, int]) -> None:
    data = jpeg(*size)
    full = torch.from_numpy(simplejpeg.decode_jpeg(data)).permute(2, 0, 1)
    ours, reference = ReducedDecodeTrain(224), reference_train(224)
    flips = set()
    for seed in range(12):
        torch.manual_seed(seed)
        expected = reference(full)
        torch.manual_seed(seed)
        box, _, flip = ours.plan(*size)
        flips.add(flip)
        torch.manual_seed(seed)
        got = ours(data)
        assert got.shape == expected.shape == (3, 224, 224) and got.dtype == torch.uint8
        error = (got.float() - expected.float()).abs().mean().item()
        assert error < 6, (seed, error)  # DCT downscaling + sub-pixel box rounding only
        mirrored = (got.float() - expected.flip(-1).float()).abs().mean().item()
        if box.width >= 16:  # dark left third: a wrong flip is far off
            assert mirrored > error
    assert flips == {True, False}


def test_scale_of_drawn_crops_follows_the_configured_range() -> None:
    train = ReducedDecodeTrain(224, scale=(0.25, 0.5), ratio=(1.0, 1.0))
    torch.manual_seed(0)
    areas = []
    for _ in range(2000):
        box, _, _ = train.plan(400, 400)
        areas.append(box.height * box.width / (400 * 400))
    assert min(areas) >= 0.25 - 0.01 and max(areas) <= 0.5 + 0.01
    assert sum(areas) / len(areas) == pytest.approx(0.375, abs=0.01)  # uniform on the range


@pytest.mark.parametrize("size", [(375, 500), (1200, 1600), (600, 520), (200, 150)])
def test_eval_matches_resize_and_centre_crop(size: tuple[int, int]) -> None:
    data = jpeg(*size)
    full = torch.from_numpy(simplejpeg.decode_jpeg(data)).permute(2, 0, 1)
    expected = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])(full)
    ours = ReducedDecodeEval(224, 256)
    factor = ours.factor(*size)
    assert math.ceil(min(size) / factor) >= min(256, min(size))
    got = ours(data)
    assert got.shape == (3, 224, 224)
    assert (got.float() - expected.float()).abs().mean().item() < 4


def test_non_jpeg_files_take_the_full_decoder() -> None:
    image = smooth_image(300, 260)
    png = bytes(encode_png(image).numpy().tobytes())
    assert jpeg_size(png) is None
    torch.manual_seed(3)
    expected = reference_train(64)(image)
    torch.manual_seed(3)
    assert torch.equal(ReducedDecodeTrain(64)(png), expected)
    grey = bytes(encode_png(image[:1]).numpy().tobytes())
    assert ReducedDecodeEval(64, 73)(grey).shape == (3, 64, 64)


def write_folder(root: Path) -> Path:
    for label in range(2):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(3):
            (folder / f"{i}.JPEG").write_bytes(jpeg(300 + 40 * i, 400, seed=label * 10 + i))
    return root


def test_registered_dataset_and_its_seeded_items(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "train")
    spec = {"type": "imagenet_folder", "root": str(root), "image_size": 64, "normalize": False}
    train = visionforge.datasets.build({**spec, "augment": "train"})
    assert isinstance(train, ReducedDecodeImageFolder)
    item = train[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.uint8
    assert item["label"] == 0 and train[5]["label"] == 1
    # resume relies on items depending only on (seed, epoch, index), not on call order
    seeded = SeededDataset(train, seed=7)
    first = [seeded[(1, i)]["image"] for i in range(6)]
    again = [seeded[(1, i)]["image"] for i in reversed(range(6))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(seeded[(2, 0)]["image"], first[0])
    full = visionforge.datasets.build({**spec, "augment": "eval", "decoder": "full"})
    assert not isinstance(full, ReducedDecodeImageFolder)
    normalized = visionforge.datasets.build({**spec, "augment": "eval", "normalize": True})
    assert normalized[0]["image"].dtype == torch.float32


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "train")
    (root / "class1" / "0.JPEG").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    dataset = visionforge.datasets.build(
        {"type": "imagenet_folder", "root": str(root), "image_size": 64, "augment": "train"}
    )
    with pytest.raises(visionforge.errors.StorageError, match=r"class1/0\.JPEG: cannot decode"):
        dataset[3]


def test_bad_scale_range_is_rejected() -> None:
    with pytest.raises(visionforge.errors.ConfigError, match="scale"):
        visionforge.datasets.build(
            {"type": "imagenet_folder", "root": "/nonexistent", "scale": [0.5, 0.1]}
        )


def test_the_decoder_is_part_of_the_recipe_hash() -> None:
    """Resuming with the other decoder is refused as a recipe change (the images differ)."""
    reduced = imagenet_recipe("resnet18", num_classes=4)
    full = imagenet_recipe("resnet18", num_classes=4)
    full["data"]["train"]["decoder"] = "full"
    fewer_workers = imagenet_recipe("resnet18", num_classes=4, num_workers=1)
    digest = recipe_from_dict(reduced, check=False).sha256()
    assert recipe_from_dict(full, check=False).sha256() != digest
    assert recipe_from_dict(fewer_workers, check=False).sha256() == digest
