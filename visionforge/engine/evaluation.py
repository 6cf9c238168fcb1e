"""Evaluation loops: inside the trainer and stand-alone (``visionforge eval``).

Under DDP every rank evaluates its own share of the data (rank ``r`` takes items ``r, r+W,
...``: no duplicates), evaluators gather in ``compute()`` and mean losses are reduced over
ranks, so every rank returns the same metrics.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from visionforge import storage
from visionforge.config import Recipe
from visionforge.engine.averaging import accumulate, global_means
from visionforge.engine.batch import ImagePreparer, move_to_device
from visionforge.engine.checkpoint import load_model
from visionforge.engine.data import SampleKey, SeededDataset, make_loader
from visionforge.engine.distributed import choose_device
from visionforge.errors import ConfigError
from visionforge.interfaces import (
    BatchLoader,
    CategoryMapped,
    DetailedEvaluator,
    Evaluator,
    NamedClasses,
    Predictor,
    ReportingEvaluator,
)
from visionforge.registry import REGISTRIES
from visionforge.run_folder import RUN_CHECKPOINTS

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(device: torch.device, precision: str) -> Callable[[], Any]:
    """A factory of autocast contexts for ``precision`` (a null context for fp32)."""
    dtype = PRECISIONS.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def label_map(model: Any, dataset: Any) -> torch.Tensor | None:
    """Model label -> dataset label (-1: a category the dataset does not have), when both
    are :class:`CategoryMapped` with different ``category_ids`` (e.g. official COCO weights
    with 91 id slots evaluated on a dataset numbering its 80 categories 0..79); else None."""
    if not (isinstance(model, CategoryMapped) and isinstance(dataset, CategoryMapped)):
        return None
    if list(model.category_ids) == list(dataset.category_ids):
        return None
    index = {category: i for i, category in enumerate(dataset.category_ids)}
    return torch.tensor([index.get(category, -1) for category in model.category_ids])


def category_ids_of(dataset: Any) -> list[int] | None:
    """The category id of each class of a :class:`CategoryMapped` dataset (else None):
    checkpoints record it so predict can report the ids a detector was trained on."""
    return [int(c) for c in dataset.category_ids] if isinstance(dataset, CategoryMapped) else None


def model_label_map(model: Any, dataset: Any) -> torch.Tensor | None:
    """Dataset label -> model label, when both are :class:`CategoryMapped` with different
    ``category_ids`` (training official COCO-id weights on a dataset numbering its classes
    0..K-1): the loss then compares like with like. None when the spaces agree."""
    if label_map(model, dataset) is None:
        return None
    slot = {category: i for i, category in enumerate(model.category_ids)}
    missing = [c for c in dataset.category_ids if c not in slot]
    if missing:
        raise ConfigError(
            f"model.category_ids: the model has no class for the dataset's category ids "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}; set model.num_classes to the "
            f"dataset's {len(dataset.category_ids)} classes (the class head is re-initialized) "
            "or give category_ids that include them"
        )
    return torch.tensor([slot[c] for c in dataset.category_ids])


def to_model_labels(batch: Mapping[str, Any], mapping: torch.Tensor | None) -> Mapping[str, Any]:
    """``batch`` with each target's ``labels`` mapped by :func:`model_label_map`."""
    if mapping is None or "target" not in batch:
        return batch
    targets = [
        {**t, "labels": mapping.to(t["labels"].device)[t["labels"]]} for t in batch["target"]
    ]
    return {**batch, "target": targets}


def to_dataset_labels(prediction: dict[str, Any], mapping: torch.Tensor) -> dict[str, Any]:
    """One image's detections with labels mapped by :func:`label_map`; detections of
    categories the dataset does not have are dropped (its ground truth cannot match them)."""
    labels = mapping.to(prediction["labels"].device)[prediction["labels"]]
    keep = labels >= 0
    mapped = {k: v[keep] if isinstance(v, torch.Tensor) else v for k, v in prediction.items()}
    mapped["labels"] = labels[keep]
    return mapped


def with_predictions(
    model: nn.Module,
    outputs: Mapping[str, Any],
    batch: Mapping[str, Any],
    mapping: torch.Tensor | None = None,
) -> Mapping[str, Any]:
    """``outputs`` plus ``"predictions"`` (one dict per image, labels in the dataset's
    label space) when the model is a :class:`~visionforge.interfaces.Predictor`:
    evaluators read the model's own post-processing instead of redoing it."""
    if not isinstance(model, Predictor):
        return outputs
    predictions = model.postprocess(outputs, batch)
    if mapping is not None:
        predictions = [to_dataset_labels(p, mapping) for p in predictions]
    return {**outputs, "predictions": predictions}


class ShardSampler(Sampler[SampleKey]):
    """Rank ``rank`` of ``world_size`` takes items ``rank, rank + world_size, ...`` in order,
    as ``(0, index)`` keys for :class:`SeededDataset`: every item exactly once over all
    ranks (unlike DistributedSampler, no padding duplicates that would count twice)."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, num_samples, world_size)

    def __iter__(self) -> Iterator[SampleKey]:
        return ((0, index) for index in self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@torch.no_grad()
def run_evaluation(
    model: nn.Module,
    loader: DataLoader[Any] | BatchLoader,
    device: torch.device,
    *,
    evaluator: Evaluator | None,
    loss_fn: Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, torch.Tensor]],
    prepare: ImagePreparer,
    autocast: Callable[[], Any],
    progress: bool = True,
) -> dict[str, float]:
    """Evaluate ``model`` over ``loader``: the evaluator's metrics, or the mean of each loss
    term without one. Under DDP every rank must call it (with its share of the data)."""
    was_training = model.training
    model.eval()
    if evaluator is not None:
        evaluator.reset()
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    dataset = loader.dataset
    data = dataset.dataset if isinstance(dataset, SeededDataset) else dataset
    mapping, targets_map = label_map(model, data), model_label_map(model, data)
    try:
        for raw in tqdm(loader, desc="eval", leave=False, disable=not progress, dynamic_ncols=True):
            batch = prepare(move_to_device(raw, device, non_blocking=True))
            with autocast():
                outputs = model(batch)
            if evaluator is not None:
                evaluator.update(with_predictions(model, outputs, batch, mapping), batch)
                continue
            accumulate(sums, counts, loss_fn(outputs, to_model_labels(batch, targets_map)))
    finally:
        model.train(was_training)
    if evaluator is not None:
        return {k: float(v) for k, v in evaluator.compute().items()}
    return global_means(sums, counts, device)


def eval_loader(
    dataset: Any,
    recipe: Recipe,
    pin_memory: bool,
    *,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
) -> DataLoader[Any] | BatchLoader:
    """Sequential loader over this rank's share of the dataset, seeded like the trainer's."""
    seed = recipe.trainer.seed
    sampler = ShardSampler(len(dataset), rank, world_size)
    return make_loader(
        SeededDataset(dataset, seed),
        sampler,
        recipe.trainer.batch_size,
        recipe.data.loader,
        seed,
        pin_memory,
        device,
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
    for name in RUN_CHECKPOINTS:
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
    # a checkpoint trained on a GPU still evaluates on a machine without one
    device = choose_device("cpu" if recipe.trainer.device == "cpu" else "auto")
    model.to(device)
    dataset = REGISTRIES.datasets.build(spec.as_dict(), f"data.{split}")
    evaluator = build_evaluator(recipe, dataset)
    loss_fn = REGISTRIES.losses.build(recipe.loss.as_dict(), "loss")
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)
    metrics = run_evaluation(
        model,
        eval_loader(dataset, recipe, pin_memory=device.type == "cuda", device=device),
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
