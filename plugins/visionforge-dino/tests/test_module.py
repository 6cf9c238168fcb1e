"""MultiScaleDeformableAttention: initialization, masks, reference-point forms, backends."""

from __future__ import annotations

import math

import pytest
import torch

from visionforge.errors import ConfigError
from visionforge_dino.ops import MSDAInputError, MultiScaleDeformableAttention
from visionforge_dino.ops.functional import level_tensors

SHAPES = [(6, 8), (3, 4), (2, 2), (1, 1)]
KEYS = sum(h * w for h, w in SHAPES)


def _inputs(batch: int = 2, queries: int = 7, dim: int = 32) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(batch, queries, dim, generator=generator)
    value = torch.randn(batch, KEYS, dim, generator=generator)
    reference = torch.rand(batch, queries, len(SHAPES), 2, generator=generator)
    return query, value, reference


def test_offsets_start_on_a_ring_per_head() -> None:
    layer = MultiScaleDeformableAttention(embed_dim=32, num_heads=8, num_levels=4, num_points=3)
    ring = layer.sampling_offsets.bias.detach().view(8, 4, 3, 2)
    assert torch.equal(
        layer.sampling_offsets.weight, torch.zeros_like(layer.sampling_offsets.weight)
    )
    for head in range(8):
        angle = math.atan2(float(ring[head, 0, 0, 1]), float(ring[head, 0, 0, 0]))
        assert angle % (2 * math.pi) == pytest.approx(head * 2 * math.pi / 8, abs=1e-6)
        # the larger coordinate of the first point is one pixel; point k sits k + 1 out
        assert float(ring[head, 0, 0].abs().max()) == pytest.approx(1.0)
        for point in range(3):
            expected = (ring[head, 0, 0] * (point + 1)).expand(4, 2)
            torch.testing.assert_close(ring[head, :, point], expected)


def test_attention_starts_uniform() -> None:
    layer = MultiScaleDeformableAttention(embed_dim=32, num_heads=4, num_levels=4, num_points=2)
    query, _, _ = _inputs()
    weights = layer.attention_weights(query).view(2, 7, 4, 8).softmax(-1)
    torch.testing.assert_close(weights, torch.full_like(weights, 1 / 8))
    assert torch.count_nonzero(layer.value_proj.bias) == 0


@pytest.mark.parametrize("backend", ["pytorch", "cpu"])
def test_padded_keys_do_not_contribute(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "cpu":
        request.getfixturevalue("cpu_kernel")
    torch.manual_seed(0)
    layer = MultiScaleDeformableAttention(32, 4, len(SHAPES), 2, backend=backend)
    query, value, reference = _inputs()
    mask = torch.zeros(2, KEYS, dtype=torch.bool)
    mask[1, :48] = True  # the whole first level of the second image is padding
    out = layer(query, reference, value, SHAPES, key_padding_mask=mask)
    changed = value.clone()
    changed[1, :48] = 1e3
    out_changed = layer(query, reference, changed, SHAPES, key_padding_mask=mask)
    torch.testing.assert_close(out, out_changed)
    unmasked = layer(query, reference, changed, SHAPES)
    assert not torch.allclose(unmasked[1], out[1])


@pytest.mark.usefixtures("cpu_kernel")
def test_backends_agree_with_tensor_or_list_shapes() -> None:
    torch.manual_seed(0)
    layer = MultiScaleDeformableAttention(32, 4, len(SHAPES), 3)
    torch.nn.init.normal_(layer.sampling_offsets.weight, std=0.5)
    query, value, reference = _inputs()
    outputs = []
    for backend, shapes in (("pytorch", SHAPES), ("cpu", torch.tensor(SHAPES))):
        layer.backend = backend
        layer.zero_grad()
        out = layer(query, reference, value, shapes)
        out.square().sum().backward()
        grads = [p.grad.clone() for p in layer.parameters() if p.grad is not None]
        assert len(grads) == 8
        outputs.append([out.detach(), *grads])
    for ours, reference_grad in zip(*outputs, strict=True):
        torch.testing.assert_close(ours, reference_grad, atol=1e-4, rtol=1e-4)


def test_box_reference_points_scale_offsets_by_box_size() -> None:
    layer = MultiScaleDeformableAttention(32, 4, len(SHAPES), 2, backend="pytorch")
    query, value, centers = _inputs()
    tiny_boxes = torch.cat([centers, torch.full_like(centers, 1e-6)], dim=-1)
    at_center = layer(query, tiny_boxes, value, SHAPES)
    # offsets vanish for zero-sized boxes: the same as sampling at the centers with no offset
    layer.sampling_offsets.bias.data.zero_()
    no_offsets = layer(query, centers, value, SHAPES)
    torch.testing.assert_close(at_center, no_offsets, atol=1e-4, rtol=1e-4)


def test_bad_configuration_and_inputs() -> None:
    with pytest.raises(ConfigError, match="embed_dim=30 is not divisible by num_heads=8"):
        MultiScaleDeformableAttention(30, 8)
    with pytest.raises(ConfigError, match="num_points=0"):
        MultiScaleDeformableAttention(32, 8, num_points=0)
    layer = MultiScaleDeformableAttention(32, 4, len(SHAPES), 2, backend="pytorch")
    query, value, reference = _inputs()
    with pytest.raises(MSDAInputError, match="reference_points"):
        layer(query, reference[:, :, :2], value, SHAPES)
    with pytest.raises(MSDAInputError, match="key_padding_mask"):
        layer(query, reference, value, SHAPES, key_padding_mask=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(MSDAInputError, match="embed_dim=32"):
        layer(query[..., :16], reference, value, SHAPES)


def test_level_tensors_are_copied_once_and_work_after_inference_mode() -> None:
    shapes = [(4, 5), (2, 3)]
    with torch.inference_mode():
        first = level_tensors(shapes, torch.device("cpu"))
    again = level_tensors([(4, 5), (2, 3)], torch.device("cpu"))
    assert again[0] is first[0] and again[1] is first[1]
    assert again[1].tolist() == [0, 20] and not again[0].is_inference()
    layer = MultiScaleDeformableAttention(embed_dim=16, num_heads=2, num_levels=2, num_points=2)
    query, value = torch.randn(1, 3, 16), torch.randn(1, 26, 16)
    points = torch.rand(1, 3, 2, 2)
    with torch.inference_mode():
        layer(query, points, value, shapes)
    layer(query, points, value, shapes).sum().backward()
    assert layer.value_proj.weight.grad is not None
