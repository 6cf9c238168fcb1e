"""Classification transform presets and device-side normalization."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from visionforge.data import classification_transforms, device_normalize

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture
def image() -> tv_tensors.Image:
    g = torch.Generator().manual_seed(0)
    return tv_tensors.Image(torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8, generator=g))


def horizontal_ramp(width: int = 256, height: int = 96) -> tv_tensors.Image:
    """Pixel value = column index: crops narrow the value range, a flip reverses it."""
    ramp = torch.arange(width, dtype=torch.uint8).expand(3, height, width).clone()
    return tv_tensors.Image(ramp)


def test_train_preset_crops_flips_and_normalizes(image: tv_tensors.Image) -> None:
    out = classification_transforms(32, "train")(image)
    assert isinstance(out, tv_tensors.Image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32

    # normalize: a flat colour stays flat through crop/flip and ends as (c/255 - mean) / std
    colour = torch.tensor([200, 100, 30], dtype=torch.uint8)
    flat = tv_tensors.Image(colour[:, None, None].expand(3, 48, 64).clone())
    normalized = classification_transforms(32, "train")(flat)
    expected = (colour.float() / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(normalized, expected[:, None, None].expand(3, 32, 32))

    # crop and flip: on a ramp every output row is monotonic, rising unless flipped, and
    # spans only the cropped part of the 0..255 range
    transform = classification_transforms(32, "train", normalize=False)
    flips, spans = 0, []
    for seed in range(40):
        torch.manual_seed(seed)
        row = transform(horizontal_ramp())[0, 0].int()
        rising = bool((row.diff() >= 0).all())
        assert rising or bool((row.diff() <= 0).all()), f"seed {seed}: not a crop of the ramp"
        flips += not rising
        spans.append(int(row.max() - row.min()))
    assert 5 <= flips <= 35  # RandomHorizontalFlip(p=0.5) over 40 draws
    assert min(spans) < 128 and len(set(spans)) > 10  # random crops of random widths


def test_eval_preset_resizes_by_the_ratio_then_center_crops(image: tv_tensors.Image) -> None:
    uint8 = classification_transforms(32, "eval", resize_ratio=0.5, normalize=False)(image)
    assert uint8.dtype == torch.uint8 and uint8.shape == (3, 32, 32)
    # the short side goes to round(32 / 0.5) = 64, so the crop keeps the middle half
    resized = torch.nn.functional.interpolate(
        image[None].float(), size=(64, 85), mode="bilinear", antialias=True, align_corners=False
    )[0]
    top, left = (64 - 32) // 2, (85 - 32) // 2
    expected = resized[:, top : top + 32, left : left + 32].round().clamp(0, 255)
    assert (uint8.float() - expected).abs().max() <= 1


def test_none_preset_resizes_to_a_square(image: tv_tensors.Image) -> None:
    out = classification_transforms(20, "none", normalize=False)(image)
    assert out.shape == (3, 20, 20)


def test_unknown_preset_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"augment"):
        classification_transforms(20, "strong")  # type: ignore[arg-type]


def test_device_normalize_equals_per_item_normalization(image: tv_tensors.Image) -> None:
    per_item = classification_transforms(32, "eval", mean=MEAN, std=STD)
    uint8 = classification_transforms(32, "eval", normalize=False)
    batch = torch.stack([uint8(image), uint8(image.flip(-1))])
    expected = torch.stack([per_item(image), per_item(image.flip(-1))])
    torch.testing.assert_close(device_normalize(batch, MEAN, STD), expected)
