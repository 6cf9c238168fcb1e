"""Evaluation loops: inside the trainer and stand-alone (``visionforge eval``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from visionforge import storage
from visionforge.config import Recipe
from visionforge.engine.batch import ImagePreparer, move_to_device
from visionforge.engine.checkpoint import load_model
from visionforge.engine.data import ResumableSampler, SeededDataset, make_loader
from visionforge.errors import ConfigError
from visionforge.interfaces import (
    DetailedEvaluator,
    Evaluator,
    NamedClasses,
    ReportingEvaluator,
)
from visionforge.registry import REGISTRIES

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(device: torch.device, precision: str) -> Callable[[], Any]:
    """A factory of autocast contexts for ``precision`` (a null context for fp32)."""
    dtype = PRECISIONS.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def run_evaluation(
    model: nn.Module,
    loader: DataLoader[Any],
    device: torch.device,
    *,
    evaluator: Evaluator | None,
    loss_fn: Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, torch.Tensor]],
    prepare: ImagePreparer,
    autocast: Callable[[], Any],
    progress: bool = True,
) -> dict[str, float]:
    """Evaluate ``model`` over ``loader``: the evaluator's metrics, or the mean loss without one."""
    was_training = model.training
    model.eval()
    if evaluator is not None:
        evaluator.reset()
    total: dict[str, torch.Tensor] = {}
    batches = 0
    try:
        for raw in tqdm(loader, desc="eval", leave=False, disable=not progress, dynamic_ncols=True):
            batch = prepare(move_to_device(raw, device, non_blocking=True))
            with autocast():
                outputs = model(batch)
            if evaluator is not None:
                evaluator.update(outputs, batch)
                continue
            for key, value in loss_fn(outputs, batch).items():
                total[key] = total.get(key, torch.zeros((), device=device)) + value.detach().float()
            batches += 1
    finally:
        model.train(was_training)
    if evaluator is not None:
        return {k: float(v) for k, v in evaluator.compute().items()}
    return {k: float(v) / max(1, batches) for k, v in total.items()}


def eval_loader(dataset: Any, recipe: Recipe, pin_memory: bool) -> DataLoader[Any]:
    """Sequential loader over the whole dataset, seeded like the trainer's."""
    seed = recipe.trainer.seed
    sampler = ResumableSampler(
        len(dataset), recipe.trainer.batch_size, shuffle=False, seed=seed, drop_last=False
    )
    return make_loader(
        SeededDataset(dataset, seed),
        sampler,
        recipe.trainer.batch_size,
        recipe.data.loader,
        seed,
        pin_memory,
    )


def build_evaluator(recipe: Recipe, dataset: Any) -> Evaluator | None:
    """The recipe's evaluator, told the dataset's class names when both name classes."""
    if recipe.evaluator is None:
        return None
    evaluator: Evaluator = REGISTRIES.evaluators.build(recipe.evaluator.as_dict(), "evaluator")
    share_class_names(dataset, evaluator)
    return evaluator


def share_class_names(dataset: Any, evaluator: Evaluator) -> None:
    """Give ``evaluator`` the dataset's class names when both are :class:`NamedClasses`."""
    if isinstance(dataset, NamedClasses) and isinstance(evaluator, NamedClasses):
        evaluator.class_names = [str(name) for name in dataset.class_names]


def _default_checkpoint(recipe: Recipe) -> str | None:
    output = recipe.trainer.output or ""
    for name in ("best.ckpt", "last.ckpt"):
        candidate = storage.join(output, name)
        if storage.exists(candidate):
            return candidate
    return None


def evaluate(
    recipe: Recipe,
    checkpoint: str | None = None,
    *,
    split: Literal["val", "train"] = "val",
    report_dir: str | None = None,
) -> dict[str, float]:
    """Evaluate a checkpoint (default: best.ckpt, else last.ckpt of the recipe's output) on
    the recipe's ``split`` dataset; ``report_dir`` receives the evaluator's reports."""
    spec = recipe.data.val if split == "val" else recipe.data.train
    if spec is None:
        raise ConfigError("data.val: evaluation needs a validation dataset; add a data.val block")
    checkpoint = checkpoint or _default_checkpoint(recipe)
    if checkpoint is None:
        print(
            f"note: no checkpoint in {recipe.trainer.output}; evaluating the model as built",
            file=sys.stderr,
        )
    use_ema = recipe.trainer.ema is None or recipe.trainer.ema.evaluate
    model, _ = load_model(recipe, checkpoint, use_ema=use_ema)
    device = torch.device(
        "cuda" if recipe.trainer.device != "cpu" and torch.cuda.is_available() else "cpu"
    )
    model.to(device)
    dataset = REGISTRIES.datasets.build(spec.as_dict(), f"data.{split}")
    evaluator = build_evaluator(recipe, dataset)
    loss_fn = REGISTRIES.losses.build(recipe.loss.as_dict(), "loss")
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)
    metrics = run_evaluation(
        model,
        eval_loader(dataset, recipe, pin_memory=device.type == "cuda"),
        device,
        evaluator=evaluator,
        loss_fn=loss_fn,
        prepare=ImagePreparer(recipe.data.normalize_on_device, recipe.trainer.channels_last),
        autocast=autocast_for(device, recipe.trainer.precision),
    )
    if isinstance(evaluator, DetailedEvaluator):
        metrics.update(evaluator.details())
    if report_dir is not None and isinstance(evaluator, ReportingEvaluator):
        evaluator.write_report(report_dir)
    return metrics
