"""The PyTorch reference follows grid_sample's bilinear, zero-padded, align_corners=False rule."""

from __future__ import annotations

import pytest
import torch

from visionforge_dino.ops import ms_deform_attn_pytorch


def _one_sample(value_map: torch.Tensor, x: float, y: float) -> float:
    """Sample a single-level, single-head, single-channel map at normalized (x, y)."""
    height, width = value_map.shape
    value = value_map.reshape(1, height * width, 1, 1).double()
    locations = torch.tensor([x, y], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)
    weights = torch.ones(1, 1, 1, 1, 1, dtype=torch.float64)
    out = ms_deform_attn_pytorch(value, [(height, width)], locations, weights)
    return float(out.item())


@pytest.fixture
def value_map() -> torch.Tensor:
    return torch.arange(1, 13, dtype=torch.float64).view(3, 4)


def test_pixel_centers_return_the_pixel(value_map: torch.Tensor) -> None:
    height, width = value_map.shape
    for row in range(height):
        for col in range(width):
            got = _one_sample(value_map, (col + 0.5) / width, (row + 0.5) / height)
            assert got == pytest.approx(float(value_map[row, col]))


def test_between_centers_interpolates_bilinearly(value_map: torch.Tensor) -> None:
    # halfway between the centers of (0, 1) and (0, 2), a quarter down towards row 1
    got = _one_sample(value_map, 2.0 / 4, (0.5 + 0.25) / 3)
    top = (value_map[0, 1] + value_map[0, 2]) / 2
    bottom = (value_map[1, 1] + value_map[1, 2]) / 2
    assert got == pytest.approx(float(0.75 * top + 0.25 * bottom))


def test_borders_are_zero_padded(value_map: torch.Tensor) -> None:
    # the image corner lies half a pixel outside the first center: a quarter of it remains
    assert _one_sample(value_map, 0.0, 0.0) == pytest.approx(float(value_map[0, 0]) / 4)
    assert _one_sample(value_map, 1.0, 1.0) == pytest.approx(float(value_map[-1, -1]) / 4)
    assert _one_sample(value_map, 1.0, 0.5 / 3) == pytest.approx(float(value_map[0, -1]) / 2)
    assert _one_sample(value_map, -0.5, 0.5) == 0.0
    assert _one_sample(value_map, 0.5, 2.0) == 0.0


def test_output_is_the_weighted_sum_over_levels_and_points() -> None:
    shapes = [(2, 2), (1, 1)]
    value = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0], dtype=torch.float64).view(1, 5, 1, 1)
    centers = [[(0.25, 0.25), (0.75, 0.75)], [(0.5, 0.5), (0.5, 0.5)]]
    locations = torch.tensor(centers, dtype=torch.float64).view(1, 1, 1, 2, 2, 2)
    weights = torch.tensor([[0.1, 0.2], [0.3, 0.4]], dtype=torch.float64).view(1, 1, 1, 2, 2)
    out = ms_deform_attn_pytorch(value, shapes, locations, weights)
    assert out.shape == (1, 1, 1)
    assert float(out) == pytest.approx(0.1 * 1 + 0.2 * 4 + 0.3 * 10 + 0.4 * 10)


def test_heads_and_channels_are_laid_out_head_major() -> None:
    value = torch.arange(6, dtype=torch.float64).view(1, 1, 2, 3)  # one key, 2 heads x 3
    locations = torch.full((1, 1, 2, 1, 1, 2), 0.5, dtype=torch.float64)
    weights = torch.ones(1, 1, 2, 1, 1, dtype=torch.float64)
    out = ms_deform_attn_pytorch(value, [(1, 1)], locations, weights)
    assert out.view(-1).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_reduced_precision_value_samples_at_fp32_locations() -> None:
    width = 256
    value = torch.arange(width, dtype=torch.bfloat16).view(1, width, 1, 1)
    # pixel 200's center; in bf16 this location would round to pixel 199.5 or 200.5
    x = (200 + 0.5) / width
    locations = torch.tensor([x, 0.5]).view(1, 1, 1, 1, 1, 2)
    weights = torch.ones(1, 1, 1, 1, 1)
    out = ms_deform_attn_pytorch(value, [(1, width)], locations, weights)
    assert out.dtype == torch.bfloat16
    assert float(out) == 200.0
