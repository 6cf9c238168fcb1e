"""Frozen auxiliary modules: a distillation teacher or any network a run uses but never trains.

The recipe's ``teacher:`` block is built through the models registry into a
:class:`~visionforge.interfaces.FrozenModule`. It stays outside the trained model, so the
checkpoint, EMA, DDP and the optimizer never see it: it is moved to the run's device, put in
eval mode with ``requires_grad=False`` and called under ``torch.no_grad`` (not inference mode:
a loss may save its outputs for backward) inside the run's autocast. The loss receives its
outputs as ``outputs[module.output_key]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any, get_args, get_origin

import torch
from pydantic import BaseModel
from torch import nn

from visionforge.config import InputPathMarker, Recipe
from visionforge.errors import ConfigError
from visionforge.interfaces import Batch, FrozenModule
from visionforge.registry import REGISTRIES

LossFn = Callable[[Mapping[str, Any], Batch], Mapping[str, torch.Tensor]]


def freeze(module: FrozenModule, device: torch.device) -> FrozenModule:
    """Move ``module`` to ``device``, switch it to eval mode and turn its gradients off."""
    if isinstance(module, nn.Module):
        module.to(device)
        module.eval()
        module.requires_grad_(False)
    return module


class FrozenModules:
    """The run's frozen modules, called together on each batch.

    ``outputs(batch)`` runs every module under ``torch.no_grad`` and ``autocast()`` and
    returns ``{output_key: module(batch)}``; a module switched to train mode by anyone is put
    back in eval mode first.
    """

    def __init__(
        self,
        modules: Sequence[FrozenModule],
        device: torch.device,
        autocast: Callable[[], Any] = contextlib.nullcontext,
    ) -> None:
        keys = [m.output_key for m in modules]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ConfigError(f"teacher: two frozen modules write outputs[{duplicates[0]!r}]")
        self.modules = [freeze(m, device) for m in modules]
        self.autocast = autocast

    def __bool__(self) -> bool:
        return bool(self.modules)

    def __iter__(self) -> Iterator[FrozenModule]:
        return iter(self.modules)

    def outputs(self, batch: Batch) -> dict[str, Mapping[str, torch.Tensor]]:
        """Every module's outputs on ``batch``, keyed by its ``output_key``."""
        result: dict[str, Mapping[str, torch.Tensor]] = {}
        with torch.no_grad(), self.autocast():
            for module in self.modules:
                if isinstance(module, nn.Module) and module.training:
                    module.eval()
                result[module.output_key] = module(batch)
        return result

    def identities(self) -> dict[str, dict[str, Any]]:
        """``{output_key: identity()}``: what manifests record instead of the weights."""
        return {m.output_key: dict(m.identity()) for m in self.modules}

    def feeding(self, loss_fn: LossFn) -> LossFn:
        """``loss_fn`` called with the frozen modules' outputs added to the model's."""
        return LossWithFrozenOutputs(loss_fn, self) if self.modules else loss_fn


class LossWithFrozenOutputs:
    """Calls ``loss(outputs | frozen.outputs(batch), batch)``."""

    def __init__(self, loss_fn: LossFn, frozen: FrozenModules) -> None:
        self.loss_fn = loss_fn
        self.frozen = frozen

    def __call__(self, outputs: Mapping[str, Any], batch: Batch) -> Mapping[str, torch.Tensor]:
        extra = self.frozen.outputs(batch)
        clash = sorted(set(extra) & set(outputs))
        if clash:
            raise ConfigError(
                f"teacher: the model already returns outputs[{clash[0]!r}]; give the frozen "
                "module another output_key"
            )
        return self.loss_fn({**outputs, **extra}, batch)


def build_frozen_modules(
    recipe: Recipe, device: torch.device, autocast: Callable[[], Any] = contextlib.nullcontext
) -> FrozenModules:
    """The recipe's frozen modules (its ``teacher:`` block), frozen on ``device``."""
    modules: list[FrozenModule] = []
    if recipe.teacher is not None:
        module = REGISTRIES.models.build(recipe.teacher.as_dict(), "teacher")
        if not isinstance(module, FrozenModule):
            raise ConfigError(
                f"teacher.type: {recipe.teacher.type!r} builds a {type(module).__name__}, not a "
                "frozen module (output_key, __call__(batch), identity()); use a teacher model"
            )
        modules.append(module)
    return FrozenModules(modules, device, autocast)


def frozen_input_paths(recipe: Recipe) -> list[str]:
    """Every path-like field (:data:`~visionforge.config.InputPath`) of the frozen modules'
    configs, nested blocks included: a teacher's weights are lineage parents of the run."""
    if recipe.teacher is None:
        return []
    config = REGISTRIES.models.validate(recipe.teacher.as_dict(), "teacher")
    return list(_input_paths(config))


def _input_paths(config: BaseModel) -> Iterator[str]:
    for name, info in type(config).model_fields.items():
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            yield from _input_paths(value)
        elif isinstance(value, str) and (
            any(isinstance(m, InputPathMarker) for m in info.metadata) or _marked(info.annotation)
        ):
            yield value


def _marked(annotation: Any) -> bool:
    """True if ``annotation`` holds an :data:`InputPath` (``InputPath | None`` included)."""
    if get_origin(annotation) is Annotated:
        return any(isinstance(m, InputPathMarker) for m in annotation.__metadata__)
    return any(_marked(arg) for arg in get_args(annotation))


def nested_strings(value: Any) -> Iterator[str]:
    """The strings inside a recipe value (dicts and lists walked)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from nested_strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from nested_strings(item)
