"""The CUDA kernel: it compiles wherever nvcc is found; numeric tests need a GPU.

Tolerances as for the CPU kernel (see test_cpu_kernel.py): float32 atol/rtol 1e-4;
bf16 atol 5e-2 rtol 1e-2 and fp16 atol 5e-3 rtol 2e-3 on the output and value gradient;
fp32 location/weight gradients of reduced-precision values atol/rtol 1e-3.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from visionforge_dino.ops import backends, build, multi_scale_deformable_attention

TOLERANCES = {
    torch.float32: ((1e-4, 1e-4), (1e-4, 1e-4)),
    torch.bfloat16: ((5e-2, 1e-2), (1e-3, 1e-3)),
    torch.float16: ((5e-3, 2e-3), (1e-3, 1e-3)),
}
needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU visible: the CUDA kernel's numeric tests"
)


@pytest.fixture(scope="session")
def cuda_build(ops_cache: Any) -> Iterator[str]:
    """The CUDA kernel built once per session (for the visible GPU, else sm_90 only)."""
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get(build.ARCH_ENV):
            arch = "9.0"
            if torch.cuda.is_available():
                major, minor = torch.cuda.get_device_capability()
                arch = f"{major}.{minor}"
            patch.setenv(build.ARCH_ENV, arch)
        build.find_toolchain.cache_clear()
        tools = build.find_toolchain()
        missing = build.missing_requirement("cuda", tools)
        if missing:
            pytest.skip(f"the CUDA kernel cannot be built here: {missing}")
        spec = build.build_spec("cuda", tools)
        library = build.built_library(spec)
        if library is None:
            library = build.build(spec, tools)  # builds and loads
        else:
            build.load_library(library)
        assert library.exists()
        yield str(library)
    build.find_toolchain.cache_clear()


@pytest.mark.slow
def test_cuda_source_compiles(cuda_build: str) -> None:
    spec_dir = os.path.dirname(cuda_build)
    assert os.path.exists(os.path.join(spec_dir, build.MARKER))
    assert hasattr(torch.ops.visionforge_msda_cuda, "forward")
    assert hasattr(torch.ops.visionforge_msda_cuda, "backward")


@pytest.fixture(scope="session")
def cuda_kernel(cuda_build: str) -> str:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible: the CUDA kernel's numeric tests")
    assert backends.ensure_compiled("cuda"), backends.failure("cuda")
    return "cuda"


def _run(backend: str, inputs: list[torch.Tensor], shapes: Any, grad: torch.Tensor) -> list[Any]:
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = multi_scale_deformable_attention(
        leaves[0], shapes, None, leaves[1], leaves[2], backend=backend
    )
    out.backward(grad.to(out.dtype))
    return [out.detach(), *(leaf.grad for leaf in leaves)]


@needs_gpu
@pytest.mark.gpu
@pytest.mark.usefixtures("cuda_kernel")
def test_gradcheck_float64_cuda(inputs_factory: Any) -> None:
    case = inputs_factory(
        [(3, 4), (2, 2), (1, 1)], batch=2, queries=3, heads=2, dim=4, points=2, device="cuda"
    )
    leaves = [t.requires_grad_() for t in case.tensors()]

    def op(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return multi_scale_deformable_attention(
            value, case.spatial_shapes, None, locations, weights, backend="cuda"
        )

    assert torch.autograd.gradcheck(op, leaves, nondet_tol=1e-12)


@needs_gpu
@pytest.mark.gpu
@pytest.mark.usefixtures("cuda_kernel")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("dim", "heads", "points", "batch", "strided"),
    [(32, 8, 4, 2, False), (3, 2, 1, 1, False), (64, 4, 3, 3, True), (256, 1, 2, 1, False)],
)
def test_parity_with_reference(
    dtype: torch.dtype,
    dim: int,
    heads: int,
    points: int,
    batch: int,
    strided: bool,
    inputs_factory: Any,
) -> None:
    shapes = [(13, 17), (7, 9), (4, 5), (1, 1)]
    case = inputs_factory(
        shapes,
        batch=batch,
        queries=50,
        heads=heads,
        dim=dim,
        points=points,
        dtype=torch.float32,
        device="cuda",
        seed=dim,
    )
    value = case.value.to(dtype)
    locations, weights = case.sampling_locations, case.attention_weights
    if strided:
        value = value.transpose(1, 2).contiguous().transpose(1, 2)
        locations = locations.transpose(0, 1).contiguous().transpose(0, 1)
        assert not value.is_contiguous() and not locations.is_contiguous()
    grad = torch.randn(batch, 50, heads * dim, device="cuda")
    ours = _run("cuda", [value, locations, weights], torch.tensor(shapes, device="cuda"), grad)
    want = _run(
        "pytorch",
        [value.double(), locations.double(), weights.double()],
        shapes,
        grad.to(dtype).double(),
    )
    (value_atol, value_rtol), (fp32_atol, fp32_rtol) = TOLERANCES[dtype]
    assert ours[0].dtype == dtype and ours[1].dtype == dtype
    for got, expected in zip(ours[:2], want[:2], strict=True):
        torch.testing.assert_close(got.double(), expected, atol=value_atol, rtol=value_rtol)
    for got, expected in zip(ours[2:], want[2:], strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, atol=fp32_atol, rtol=fp32_rtol)


@needs_gpu
@pytest.mark.gpu
@pytest.mark.usefixtures("cuda_kernel")
def test_cpu_and_cuda_kernels_agree(inputs_factory: Any, cpu_kernel: str) -> None:
    case = inputs_factory(
        [(9, 11), (5, 6), (1, 1)], queries=30, heads=8, dim=32, points=4, dtype=torch.float32
    )
    grad = torch.randn(2, 30, 256)
    on_cpu = _run("cpu", list(case.tensors()), case.spatial_shapes, grad)
    on_gpu = _run("cuda", [t.cuda() for t in case.tensors()], case.spatial_shapes, grad.cuda())
    for got, expected in zip(on_gpu, on_cpu, strict=True):
        torch.testing.assert_close(got.cpu(), expected, atol=1e-4, rtol=1e-4)
