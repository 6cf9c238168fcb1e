"""torch.compile traces the op (fake implementation, autograd); ONNX export runs in onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from visionforge_dino.ops import MultiScaleDeformableAttention

SHAPES = [(8, 10), (4, 5), (2, 3), (1, 1)]
KEYS = sum(h * w for h, w in SHAPES)


class _Block(nn.Module):
    """A layer with fixed level shapes, the way an encoder holds them."""

    def __init__(self, backend: str | None) -> None:
        super().__init__()
        self.attention = MultiScaleDeformableAttention(32, 4, len(SHAPES), 3, backend=backend)
        nn.init.normal_(self.attention.sampling_offsets.weight, std=0.3)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, value: torch.Tensor) -> Any:
        return self.attention(query, reference, value, SHAPES)


def _example(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(batch)
    return (
        torch.randn(batch, 6, 32, generator=generator),
        torch.rand(batch, 6, len(SHAPES), 2, generator=generator),
        torch.randn(batch, KEYS, 32, generator=generator),
    )


@pytest.mark.parametrize("backend", ["cpu", "pytorch"])
def test_torch_compile_matches_eager(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "cpu":
        request.getfixturevalue("cpu_kernel")
    torch.manual_seed(0)
    torch._dynamo.reset()
    block = _Block(backend)
    inputs = _example()
    eager = block(*inputs)
    eager.sum().backward()
    eager_grads = [p.grad.clone() for p in block.parameters() if p.grad is not None]
    block.zero_grad()
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    out = compiled(*inputs)
    out.sum().backward()
    torch.testing.assert_close(out, eager)
    for got, want in zip((p.grad for p in block.parameters()), eager_grads, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.slow
@pytest.mark.usefixtures("cpu_kernel")
@pytest.mark.filterwarnings("ignore:# The axis name:UserWarning")
def test_onnx_export_runs_in_onnxruntime(tmp_path: Path) -> None:
    torch.manual_seed(0)
    block = _Block(backend=None).eval()  # auto: the CPU kernel in eager mode
    path = tmp_path / "msda.onnx"
    batch = torch.export.Dim("batch", min=1, max=8)
    torch.onnx.export(
        block,
        _example(2),
        str(path),
        input_names=["query", "reference", "value"],
        dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
        dynamo=True,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in (2, 3):
        inputs = _example(size)
        with torch.no_grad():
            expected = block(*inputs).numpy()
        names = ("query", "reference", "value")
        feeds = {name: t.numpy() for name, t in zip(names, inputs, strict=True)}
        (got,) = session.run(None, feeds)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
