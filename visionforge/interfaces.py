"""The contracts every component codes against (structural: no base class needed).

A training step is ``outputs = model(batch)``; ``losses = loss(outputs, batch)`` returns a
dict whose ``"loss"`` entry is the total to back-propagate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from visionforge.config import Recipe

Batch = Mapping[str, Any]
"""A collated batch: ``{"image": Tensor[B,C,H,W], "label": Tensor[B]}`` for classification,
``{"image": ..., "target": [dict, ...]}`` (one target dict per image) for detection."""


@runtime_checkable
class Dataset(Protocol):
    """A map-style dataset; items are dicts (``image`` is a ``tv_tensors.Image``).

    May define ``collate_fn`` (used by the trainer instead of default_collate) and
    ``num_classes`` / ``class_names``.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


@runtime_checkable
class Model(Protocol):
    """An ``nn.Module`` called with a batch; returns a dict of outputs.

    ``export_module()`` returns the tensor-in, tensor-out network used for export and
    prediction.
    """

    def __call__(self, batch: Batch) -> dict[str, Any]: ...

    def export_module(self) -> nn.Module: ...


@runtime_checkable
class Loss(Protocol):
    """Returns named scalar tensors; ``"loss"`` is the total."""

    def __call__(self, outputs: Mapping[str, Any], batch: Batch) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class Evaluator(Protocol):
    """Accumulates predictions over a dataset and computes named metrics."""

    primary_metric: str
    mode: Literal["max", "min"]

    def reset(self) -> None: ...

    def update(self, outputs: Mapping[str, Any], batch: Batch) -> None: ...

    def compute(self) -> dict[str, float]: ...


class RunHandle(Protocol):
    """A submitted run, local or remote."""

    def status(self) -> Literal["pending", "running", "completed", "failed", "stopped"]: ...

    def logs(self) -> str: ...

    def wait(self, timeout: float | None = None) -> str: ...

    def artifacts(self) -> list[str]: ...


@runtime_checkable
class Runner(Protocol):
    """Runs a recipe somewhere (here, torchrun, SageMaker, EC2)."""

    def submit(self, recipe: Recipe, *, resume: bool | str = False) -> RunHandle:
        """Start the run; ``resume`` is True (from ``last.ckpt``) or a checkpoint path."""
        ...


@dataclass
class Artifact:
    """A file produced by visionforge, with its lineage manifest."""

    path: str
    kind: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.path).name


@runtime_checkable
class Exporter(Protocol):
    """Turns a model (or an upstream artifact) into a deployable artifact."""

    def export(self, model: Any, example: Any, out: str) -> Artifact: ...
