"""Fixtures of the dino ops tests: an isolated ops cache, the built CPU kernel, input maker."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from visionforge_dino.ops import backends, build


@dataclass
class MSDAInputs:
    """One call's inputs; ``spatial_shapes`` as (h, w) pairs."""

    value: torch.Tensor
    spatial_shapes: list[tuple[int, int]]
    sampling_locations: torch.Tensor
    attention_weights: torch.Tensor

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.value, self.sampling_locations, self.attention_weights


def make_inputs(
    shapes: Sequence[tuple[int, int]],
    *,
    batch: int = 2,
    queries: int = 5,
    heads: int = 2,
    dim: int = 4,
    points: int = 3,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    seed: int = 0,
    spread: float = 0.3,
) -> MSDAInputs:
    """Random inputs; locations in ``[-spread, 1 + spread]`` with some exactly on 0 and 1."""
    generator = torch.Generator().manual_seed(seed)
    keys = sum(h * w for h, w in shapes)
    levels = len(shapes)
    value = torch.randn(batch, keys, heads, dim, generator=generator, dtype=torch.float64)
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=generator)
    locations = locations.double() * (1 + 2 * spread) - spread
    flat = locations.view(-1)
    flat[::7] = 0.0
    flat[3::11] = 1.0
    weights = torch.rand(batch, queries, heads, levels, points, generator=generator).double()
    return MSDAInputs(
        value.to(device=device, dtype=dtype),
        [(int(h), int(w)) for h, w in shapes],
        locations.to(device=device, dtype=dtype),
        weights.to(device=device, dtype=dtype),
    )


@pytest.fixture(scope="session")
def inputs_factory() -> Callable[..., MSDAInputs]:
    """``inputs_factory(shapes, batch=, queries=, heads=, dim=, points=, dtype=, device=)``."""
    return make_inputs


@pytest.fixture(scope="session", autouse=True)
def ops_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Builds go to a fresh cache folder, never the user's."""
    root = tmp_path_factory.mktemp("ops-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(build.CACHE_ENV, str(root))
        patch.delenv(backends.BACKEND_ENV, raising=False)
        build.find_toolchain.cache_clear()
        yield root / "dino-ops"
    build.find_toolchain.cache_clear()


@pytest.fixture(scope="session")
def cpu_kernel(ops_cache: Path) -> str:
    """The C++ CPU kernel, compiled once per session (skipped only without a compiler)."""
    missing = build.missing_requirement("cpu", build.find_toolchain())
    if missing:
        pytest.skip(f"the C++ CPU kernel cannot be built here: {missing}")
    assert backends.ensure_compiled("cpu"), backends.failure("cpu")
    return "cpu"
