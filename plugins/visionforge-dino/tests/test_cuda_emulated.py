"""The CUDA kernels' device code, run on the CPU under a lane emulator (tests/cuda_emulator).

CI has no GPU, so msda_cuda_kernels.cuh is also compiled by the host compiler: CUDA's
built-ins come from cuda_shim.h, every lane of a group runs as a thread, warp shuffles are
exchanged and checked (mask, width, source lane), atomics take a lock, and the launch plan
(vector width, lanes per group, blocks) is the one the CUDA launchers use. Values sit between
NaN guard bands (a read outside them poisons the result) and outputs between sentinel bands
(a write outside them fails the call).

Not covered here: the sm_90 float4/float2 atomics (host builds take the per-channel path),
timing, and the host code of msda_cuda.cpp; test_cuda.py covers those on a GPU.

Tolerances as test_cuda.py: float32 atol/rtol 1e-4; bf16 atol 5e-2 rtol 1e-2 and fp16 atol
5e-3 rtol 2e-3 on the output and value gradient; fp32 location/weight gradients of
reduced-precision values atol/rtol 1e-3; float64 1e-10.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visionforge_dino.ops import build, multi_scale_deformable_attention
from visionforge_dino.ops.functional import level_tensors

EMULATOR_DIR = Path(__file__).parent / "cuda_emulator"
TOLERANCES = {
    torch.float64: ((1e-10, 1e-10), (1e-10, 1e-10)),
    torch.float32: ((1e-4, 1e-4), (1e-4, 1e-4)),
    torch.bfloat16: ((5e-2, 1e-2), (1e-3, 1e-3)),
    torch.float16: ((5e-3, 2e-3), (1e-3, 1e-3)),
}
GUARD = 64  # elements of NaN either side of the value


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The emulated kernels' ops, compiled once per session."""
    from torch.utils import cpp_extension

    tools = build.find_toolchain()
    missing = build.missing_requirement("cpu", tools)
    if missing:
        pytest.skip(f"the emulated CUDA kernels cannot be built here: {missing}")
    assert tools.ninja is not None
    directory = tmp_path_factory.mktemp("cuda-emulator")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", os.pathsep.join([str(Path(tools.ninja).parent), os.environ["PATH"]]))
        cpp_extension.load(
            name="visionforge_msda_emulated",
            sources=[str(EMULATOR_DIR / "msda_emulator.cpp")],
            extra_include_paths=[str(build.SOURCE_DIR), str(EMULATOR_DIR)],
            extra_cflags=["-O2"],
            build_directory=str(directory),
            is_python_module=False,
        )
    return torch.ops.visionforge_msda_emulated


def _between_guards(t: torch.Tensor, misalign: bool) -> torch.Tensor:
    """``t`` in a NaN-filled buffer, 16-byte aligned unless ``misalign`` (one element off)."""
    start = GUARD + int(misalign)
    buffer = torch.full((t.numel() + 2 * GUARD + 1,), float("nan"), dtype=t.dtype)
    inner = buffer[start : start + t.numel()].view(t.shape)
    inner.copy_(t)
    return inner


def _emulated(
    emulator: Any,
    case: Any,
    dtype: torch.dtype,
    grad: torch.Tensor,
    *,
    misalign: bool = False,
) -> list[torch.Tensor]:
    """Output and the three gradients from the emulated kernels (as the CUDA op gets them)."""
    opmath = torch.float64 if dtype == torch.float64 else torch.float32
    value = _between_guards(case.value.to(dtype), misalign)
    shapes, starts = level_tensors(case.spatial_shapes, torch.device("cpu"))
    locations = case.sampling_locations.to(opmath)
    weights = case.attention_weights.to(opmath)
    out = emulator.forward(value, shapes, starts, locations, weights)
    grads = emulator.backward(grad.to(dtype), value, shapes, starts, locations, weights)
    return [out, *grads]


def _reference(case: Any, dtype: torch.dtype, grad: torch.Tensor) -> list[torch.Tensor]:
    """The grid_sample reference in float64, on the values rounded to ``dtype``."""
    leaves = [
        case.value.to(dtype).double().requires_grad_(),
        case.sampling_locations.double().requires_grad_(),
        case.attention_weights.double().requires_grad_(),
    ]
    out = multi_scale_deformable_attention(
        leaves[0], case.spatial_shapes, None, leaves[1], leaves[2], backend="pytorch"
    )
    out.backward(grad.to(dtype).double())
    return [out.detach(), *(leaf.grad for leaf in leaves)]


def _assert_parity(got: list[torch.Tensor], want: list[torch.Tensor], dtype: torch.dtype) -> None:
    (value_atol, value_rtol), (acc_atol, acc_rtol) = TOLERANCES[dtype]
    assert got[0].dtype == dtype and got[1].dtype == dtype
    for ours, expected in zip(got[:2], want[:2], strict=True):
        torch.testing.assert_close(ours.double(), expected, atol=value_atol, rtol=value_rtol)
    for ours, expected in zip(got[2:], want[2:], strict=True):
        torch.testing.assert_close(ours.double(), expected, atol=acc_atol, rtol=acc_rtol)


@pytest.mark.parametrize(
    ("dtype", "dim", "misalign", "plan"),
    [
        (torch.float32, 32, False, (4, 8)),
        (torch.float32, 32, True, (1, 32)),
        (torch.float32, 3, False, (1, 4)),
        (torch.float32, 256, False, (4, 32)),
        (torch.float16, 256, False, (8, 32)),
        (torch.bfloat16, 8, False, (8, 1)),
        (torch.float64, 2, False, (2, 1)),
        (torch.float64, 6, False, (2, 4)),
    ],
)
def test_launch_plan(
    emulator: Any, dtype: torch.dtype, dim: int, misalign: bool, plan: tuple[int, int]
) -> None:
    value = _between_guards(torch.zeros(1, 4, 2, dim, dtype=dtype), misalign)
    width, lanes, blocks = emulator.plan(value, 10)
    assert (width, lanes) == plan
    assert blocks == math.ceil(10 * 2 * lanes / 256)
    assert emulator.plan(value, 0)[2] == 0


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("dim", "heads", "points", "batch", "misalign"),
    [
        (32, 8, 4, 2, False),  # DINO's head size: 16-byte vectors, 4-8 lanes
        (32, 4, 2, 1, True),  # misaligned value: one channel per lane, 32 lanes
        (3, 2, 1, 1, False),  # odd channels
        (64, 3, 3, 3, False),
        (256, 1, 2, 1, False),  # whole warp per group
    ],
)
def test_parity_with_reference(
    emulator: Any,
    inputs_factory: Any,
    dtype: torch.dtype,
    dim: int,
    heads: int,
    points: int,
    batch: int,
    misalign: bool,
) -> None:
    shapes = [(13, 17), (7, 9), (4, 5), (1, 1)]
    case = inputs_factory(
        shapes, batch=batch, queries=11, heads=heads, dim=dim, points=points, seed=dim
    )
    grad = torch.randn(batch, 11, heads * dim, generator=torch.Generator().manual_seed(dim))
    got = _emulated(emulator, case, dtype, grad, misalign=misalign)
    _assert_parity(got, _reference(case, dtype, grad), dtype)


@st.composite
def _cases(draw: st.DrawFn) -> dict[str, Any]:
    levels = draw(st.integers(1, 4))
    shapes = [(draw(st.integers(1, 9)), draw(st.integers(1, 9))) for _ in range(levels)]
    return {
        "shapes": shapes,
        "batch": draw(st.integers(1, 3)),
        "queries": draw(st.integers(1, 7)),
        "heads": draw(st.integers(1, 5)),
        "dim": draw(st.sampled_from([1, 2, 3, 4, 5, 8, 12, 16, 40, 64, 96, 136])),
        "points": draw(st.integers(1, 4)),
        "spread": draw(st.sampled_from([0.0, 0.3, 1.5])),
        "seed": draw(st.integers(0, 2**16)),
        "misalign": draw(st.booleans()),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
    }


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_cases())
def test_random_shapes_match_reference(
    emulator: Any, inputs_factory: Any, case: dict[str, Any]
) -> None:
    dtype = case.pop("dtype")
    misalign = case.pop("misalign")
    inputs = inputs_factory(case.pop("shapes"), **case)
    generator = torch.Generator().manual_seed(case["seed"])
    grad = torch.randn(
        case["batch"], case["queries"], case["heads"] * case["dim"], generator=generator
    )
    got = _emulated(emulator, inputs, dtype, grad, misalign=misalign)
    _assert_parity(got, _reference(inputs, dtype, grad), dtype)


def test_no_queries(emulator: Any, inputs_factory: Any) -> None:
    case = inputs_factory([(3, 4)], queries=0, dim=8, dtype=torch.float32)
    grad = torch.zeros(2, 0, 16)
    out, grad_value, grad_loc, grad_attn = _emulated(emulator, case, torch.float32, grad)
    assert out.shape == (2, 0, 16) and grad_loc.shape == (2, 0, 2, 1, 3, 2)
    assert torch.equal(grad_value, torch.zeros_like(grad_value)) and grad_attn.numel() == 0
