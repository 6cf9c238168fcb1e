"""The C++ CPU kernel against the PyTorch reference: gradcheck, hypothesis parity, dtypes.

Tolerances (inputs drawn from N(0, 1) values and [0, 1] weights):
float64: gradcheck defaults; float32: atol 1e-4, rtol 1e-4 on outputs and gradients;
bfloat16 / float16 values (fp32 locations and weights, fp32 accumulation): outputs and the
value gradient within one rounding of the result (bf16 atol 5e-2 rtol 1e-2, fp16 atol 5e-3
rtol 2e-3), location and weight gradients (fp32) atol 1e-3 rtol 1e-3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visionforge_dino.ops import MSDAInputError, multi_scale_deformable_attention
from visionforge_dino.ops.custom_op import ms_deform_attn, ms_deform_attn_backward

pytestmark = pytest.mark.usefixtures("cpu_kernel")

TOLERANCES = {
    torch.float32: {"out": (1e-4, 1e-4), "value": (1e-4, 1e-4), "fp32": (1e-4, 1e-4)},
    torch.bfloat16: {"out": (5e-2, 1e-2), "value": (5e-2, 1e-2), "fp32": (1e-3, 1e-3)},
    torch.float16: {"out": (5e-3, 2e-3), "value": (5e-3, 2e-3), "fp32": (1e-3, 1e-3)},
}


def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values in non-contiguous storage (every other element of the last dim)."""
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
    wide[..., ::2] = t
    return wide[..., ::2]


def _run(
    backend: str,
    value: torch.Tensor,
    shapes: Any,
    locations: torch.Tensor,
    weights: torch.Tensor,
    grad_output: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    leaves = [t.detach().clone().requires_grad_() for t in (value, locations, weights)]
    out = multi_scale_deformable_attention(
        leaves[0], shapes, None, leaves[1], leaves[2], backend=backend
    )
    grad = torch.ones_like(out) if grad_output is None else grad_output.to(out.dtype)
    out.backward(grad)
    return [out.detach(), *(leaf.grad for leaf in leaves if leaf.grad is not None)]


def test_gradcheck_float64(inputs_factory: Callable[..., Any]) -> None:
    case = inputs_factory([(3, 4), (2, 2), (1, 1)], batch=2, queries=3, heads=2, dim=3, points=2)
    leaves = [t.requires_grad_() for t in case.tensors()]

    def op(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return multi_scale_deformable_attention(
            value, case.spatial_shapes, None, locations, weights, backend="cpu"
        )

    assert torch.autograd.gradcheck(op, leaves)


def test_custom_op_registration(inputs_factory: Callable[..., Any]) -> None:
    """Schema, fake tensor, autograd registration and AOT dispatch (torch.library.opcheck)."""
    case = inputs_factory([(4, 3), (1, 1)], queries=4)
    shapes = torch.tensor(case.spatial_shapes)
    starts = torch.tensor([0, 12])
    args = (case.value, shapes, starts, case.sampling_locations, case.attention_weights)
    leaves = [a.clone().requires_grad_() if a.is_floating_point() else a for a in args]
    torch.library.opcheck(ms_deform_attn, tuple(leaves))
    grad = torch.randn(2, 4, 8, dtype=torch.float64)
    torch.library.opcheck(ms_deform_attn_backward, (grad, *args))


@st.composite
def _cases(draw: st.DrawFn) -> dict[str, Any]:
    levels = draw(st.integers(1, 4))
    shapes = [(draw(st.integers(1, 7)), draw(st.integers(1, 7))) for _ in range(levels)]
    if draw(st.booleans()):
        shapes[draw(st.integers(0, levels - 1))] = (1, 1)
    return {
        "shapes": shapes,
        "batch": draw(st.integers(1, 3)),
        "queries": draw(st.integers(1, 9)),
        "heads": draw(st.sampled_from([1, 2, 3, 8])),
        "dim": draw(st.sampled_from([1, 2, 3, 8, 32])),
        "points": draw(st.integers(1, 6)),
        "seed": draw(st.integers(0, 2**16)),
        "spread": draw(st.sampled_from([0.0, 0.3, 1.0])),
        "strided": draw(st.booleans()),
        "tensor_shapes": draw(st.booleans()),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_cases())
def test_float32_parity_with_reference(case: dict[str, Any], inputs_factory: Any) -> None:
    inputs = inputs_factory(
        case["shapes"],
        batch=case["batch"],
        queries=case["queries"],
        heads=case["heads"],
        dim=case["dim"],
        points=case["points"],
        seed=case["seed"],
        spread=case["spread"],
        dtype=torch.float32,
    )
    tensors = list(inputs.tensors())
    if case["strided"]:
        tensors = [_strided(t) for t in tensors]
        assert not any(t.is_contiguous() for t in tensors)
    shapes = torch.tensor(inputs.spatial_shapes) if case["tensor_shapes"] else inputs.spatial_shapes
    grad = torch.randn(case["batch"], case["queries"], case["heads"] * case["dim"])
    value, locations, weights = tensors
    ours = _run("cpu", value, shapes, locations, weights, grad_output=grad)
    reference = _run(
        "pytorch",
        value.double(),
        inputs.spatial_shapes,
        locations.double(),
        weights.double(),
        grad_output=grad.double(),
    )
    for name, got, want in zip(("out", "value", "loc", "attn"), ours, reference, strict=True):
        assert got.dtype == torch.float32, name
        torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_parity(dtype: torch.dtype, inputs_factory: Any) -> None:
    inputs = inputs_factory(
        [(9, 13), (5, 7), (3, 4), (1, 1)],
        queries=40,
        heads=4,
        dim=16,
        points=4,
        dtype=torch.float32,
        seed=3,
    )
    value = inputs.value.to(dtype)
    locations, weights = inputs.sampling_locations, inputs.attention_weights
    grad = torch.randn(2, 40, 64).to(dtype)
    ours = _run("cpu", value, inputs.spatial_shapes, locations, weights, grad_output=grad)
    reference = _run(
        "pytorch",
        value.double(),
        inputs.spatial_shapes,
        locations.double(),
        weights.double(),
        grad_output=grad.double(),
    )
    tol = TOLERANCES[dtype]
    expected_dtypes = (dtype, dtype, torch.float32, torch.float32)
    for index, (name, got, want) in enumerate(
        zip(("out", "value", "fp32", "fp32"), ours, reference, strict=True)
    ):
        assert got.dtype == expected_dtypes[index]
        atol, rtol = tol[name]
        torch.testing.assert_close(got.double(), want, atol=atol, rtol=rtol)


def test_low_precision_locations_are_computed_in_float32(inputs_factory: Any) -> None:
    inputs = inputs_factory([(6, 6)], dtype=torch.float32)
    half_locations = inputs.sampling_locations.half()
    ours = _run(
        "cpu", inputs.value, inputs.spatial_shapes, half_locations, inputs.attention_weights
    )
    reference = _run(
        "pytorch",
        inputs.value,
        inputs.spatial_shapes,
        half_locations.float(),
        inputs.attention_weights,
    )
    assert ours[2].dtype == torch.float16
    torch.testing.assert_close(ours[0], reference[0], atol=1e-5, rtol=1e-5)


def test_no_queries_gives_empty_output(inputs_factory: Any) -> None:
    inputs = inputs_factory([(3, 3)], queries=0, dtype=torch.float32)
    ours = _run(
        "cpu",
        inputs.value,
        inputs.spatial_shapes,
        inputs.sampling_locations,
        inputs.attention_weights,
    )
    assert ours[0].shape == (2, 0, 8)
    assert ours[1].abs().sum() == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i: {"value": i.value[..., None]}, "value has shape"),
        (lambda i: {"shapes": i.spatial_shapes[:1]}, "lists 1 levels"),
        (lambda i: {"shapes": [(3, 3), (2, 3)]}, "cover 15 keys but value has S=10"),
        (lambda i: {"weights": i.attention_weights[:, :2]}, "does not match"),
        (lambda i: {"shapes": torch.tensor([[3, 3]])}, "spatial_shapes has shape (1, 2)"),
    ],
)
def test_bad_inputs_name_the_problem(
    change: Callable[[Any], dict[str, Any]], message: str, inputs_factory: Any
) -> None:
    inputs = inputs_factory([(3, 3), (1, 1)], dtype=torch.float32)
    args = {
        "value": inputs.value,
        "shapes": inputs.spatial_shapes,
        "locations": inputs.sampling_locations,
        "weights": inputs.attention_weights,
    } | change(inputs)
    with pytest.raises(MSDAInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        multi_scale_deformable_attention(
            args["value"], args["shapes"], None, args["locations"], args["weights"]
        )


@pytest.mark.parametrize("backend", ["cpu", "pytorch"])
@pytest.mark.parametrize("starts", [[0, 8], torch.tensor([0, 8]), (1, 9)])
def test_wrong_level_start_index_names_the_expected_one(
    backend: str, starts: Any, inputs_factory: Any
) -> None:
    inputs = inputs_factory([(3, 3), (1, 1)], dtype=torch.float32)
    with pytest.raises(MSDAInputError, match=r"level_start_index \[\d, \d\] .* \[0, 9\]"):
        multi_scale_deformable_attention(
            inputs.value,
            inputs.spatial_shapes,
            starts,
            inputs.sampling_locations,
            inputs.attention_weights,
            backend=backend,
        )


def test_levels_unreadable_on_the_host_are_asserted_on_the_device() -> None:
    from visionforge_dino.ops.functional import _assert_levels_on_device

    shapes = torch.tensor([[3, 3], [1, 1]])
    expected = torch.tensor([0, 9])
    _assert_levels_on_device(shapes, expected, torch.tensor([0, 9]), keys=10)
    for starts, keys in ((torch.tensor([0, 8]), 10), (torch.tensor([0, 9]), 11)):
        with pytest.raises(RuntimeError, match=r"do not match value \(S=\d+\)"):
            _assert_levels_on_device(shapes, expected, starts, keys=keys)
    empty_level = torch.tensor([[0, 3], [10, 1]])
    with pytest.raises(RuntimeError, match="h, w >= 1"):
        _assert_levels_on_device(empty_level, torch.tensor([0, 0]), torch.tensor([0, 0]), keys=10)
