"""Fixtures of the dino tests: an isolated ops cache, the built CPU kernel, input maker, and
the training loop the tiny-detector learning tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import visionforge
from visionforge.engine.evaluation import with_predictions
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


@dataclass
class Overfit:
    """Loss of the first and the last step, and the COCO metrics after the last."""

    first_loss: float
    last_loss: float
    metrics: dict[str, float]


def overfit(
    model: nn.Module,
    loss: str,
    dataset: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    steps: int,
    clip_grad_norm: float = 0.1,
) -> Overfit:
    """Train ``model`` with the ``loss`` criterion for ``steps`` steps on one batch holding
    every image of ``dataset`` (a registry spec), then evaluate it on that batch
    (``coco_bbox``)."""
    data = visionforge.datasets.build(dataset)
    batch = data.collate_fn([data[i] for i in range(len(data))])
    criterion = visionforge.losses.build({"type": loss})
    model.train()
    first_loss: float | None = None
    for _ in range(steps):
        losses = criterion(model(batch), batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
        first_loss = float(losses["loss"].detach()) if first_loss is None else first_loss
    assert first_loss is not None, "steps must be at least 1"
    model.eval()
    evaluator = visionforge.evaluators.build({"type": "coco_bbox", "plots": False})
    with torch.no_grad():
        evaluator.update(with_predictions(model, model(batch), batch), batch)
    return Overfit(first_loss, float(losses["loss"].detach()), evaluator.compute())


@pytest.fixture(scope="session")
def overfit_detector() -> Callable[..., Overfit]:
    """:func:`overfit`: ``overfit_detector(model, loss, dataset, optimizer, steps)``."""
    return overfit
