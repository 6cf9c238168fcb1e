"""``visionforge resnet loader-bench``: does the recipe's data pipeline keep the model fed?

Three numbers, images/s, on this machine: the recipe's own training loader (dataset,
workers, seeded sampler and collate exactly as the Trainer builds them, batches normalized
on the device), the model's training step alone on repeated in-memory batches (forward,
loss, backward, optimizer step in the recipe's precision and memory format), and both
together. When the loader is slower than the step, the accelerator waits for data.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from visionforge.config import Recipe
from visionforge.engine.batch import ImagePreparer, move_to_device
from visionforge.engine.data import (
    ResumableSampler,
    SeededDataset,
    default_num_workers,
    make_loader,
)
from visionforge.engine.distributed import choose_device
from visionforge.engine.evaluation import autocast_for
from visionforge.errors import ConfigError
from visionforge.interfaces import BatchLoader
from visionforge.registry import REGISTRIES


@dataclass(frozen=True)
class LoaderBenchResult:
    """Images/s of the loader alone, the training step alone and both together."""

    device: str
    backend: str
    batch_size: int
    workers: int
    batches: int
    loader: float
    model: float | None
    together: float | None

    def table(self) -> str:
        lines = [
            f"device {self.device}, {self.backend} loader, batch {self.batch_size}, "
            f"{self.workers} {'DALI threads' if self.backend.startswith('dali') else 'workers'},"
            f" {self.batches} timed batches",
            f"  {'data pipeline alone':28} {self.loader:10.1f} images/s",
        ]
        if self.model is not None and self.together is not None:
            lines += [
                f"  {'training step alone':28} {self.model:10.1f} images/s",
                f"  {'data + training step':28} {self.together:10.1f} images/s",
            ]
            if self.loader < self.model:
                lines.append(
                    f"the model waits for data: the pipeline feeds {self.loader / self.model:.0%}"
                    " of what the step consumes (more workers, decoder: reduced, or fewer "
                    "large JPEGs)"
                )
            else:
                lines.append("the pipeline keeps up with the training step")
        return "\n".join(lines)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loader(recipe: Recipe, device: torch.device) -> tuple[Any, ResumableSampler]:
    """The recipe's training loader as the Trainer builds it, and its sampler."""
    cfg = recipe.trainer
    dataset = REGISTRIES.datasets.build(recipe.data.train.as_dict(), "data.train")
    sampler = ResumableSampler(len(dataset), cfg.batch_size, seed=cfg.seed)
    pin = device.type == "cuda" and recipe.data.loader.pin_memory
    loader = make_loader(
        SeededDataset(dataset, cfg.seed),
        sampler,
        cfg.batch_size,
        recipe.data.loader,
        cfg.seed,
        pin,
        device,
    )
    return loader, sampler


def _batches(
    recipe: Recipe, device: torch.device, loader: Any, sampler: ResumableSampler
) -> Generator[dict[str, Any], None, None]:
    """Batches of ``loader``, epoch after epoch, on ``device``, images prepared there."""
    prepare = ImagePreparer(recipe.data.normalize_on_device, recipe.trainer.channels_last)
    pin = device.type == "cuda" and recipe.data.loader.pin_memory
    epoch = 0
    while True:
        sampler.set_position(epoch)
        for batch in loader:
            yield dict(prepare(move_to_device(batch, device, non_blocking=pin)))
        epoch += 1


def _rate(steps: Iterator[int], count: int, warmup: int, device: torch.device, desc: str) -> float:
    """Images/s over ``count`` items of ``steps`` (each yields its batch size) after
    ``warmup`` untimed ones."""
    for _ in range(warmup):
        next(steps)
    _sync(device)
    images = 0
    start = time.perf_counter()
    for _ in tqdm(range(count), desc=desc, unit="batch", leave=False):
        images += next(steps)
    _sync(device)
    return images / (time.perf_counter() - start)


def _train_steps(
    recipe: Recipe, device: torch.device, batches: Iterator[dict[str, Any]]
) -> Iterator[int]:
    """One optimizer step per batch of ``batches``; yields the batch size."""
    model = REGISTRIES.models.build(recipe.model.as_dict(), "model").to(device)
    if recipe.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    loss_fn = REGISTRIES.losses.build(recipe.loss.as_dict(), "loss")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    autocast = autocast_for(device, recipe.trainer.precision)
    for batch in batches:
        with autocast():
            loss = loss_fn(model(batch), batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        yield int(batch["label"].shape[0])


def _repeat(batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
    while True:
        yield batch


def loader_bench(
    recipe: Recipe, *, batches: int = 50, warmup: int = 5, with_model: bool = True
) -> LoaderBenchResult:
    """Measure the recipe's training input pipeline, and the model step with and without it."""
    if batches < 1 or warmup < 0:
        raise ConfigError("loader-bench: need --batches >= 1 and --warmup >= 0")
    device = choose_device(recipe.trainer.device)
    loader, sampler = _loader(recipe, device)
    backend = loader.backend if isinstance(loader, BatchLoader) else "torch"
    data = _batches(recipe, device, loader, sampler)
    try:
        sizes = (int(b["label"].shape[0]) for b in data)
        loader_rate = _rate(sizes, batches, warmup, device, "data pipeline")
        fixed = next(data)
    finally:
        data.close()  # shuts the loader's workers down
    model_rate = together = None
    if with_model:
        model_rate = _rate(
            _train_steps(recipe, device, _repeat(fixed)), batches, warmup, device, "train step"
        )
        data = _batches(recipe, device, loader, sampler)
        try:
            steps = _train_steps(recipe, device, data)
            together = _rate(steps, batches, warmup, device, "data + step")
        finally:
            data.close()
    return LoaderBenchResult(
        device=str(device),
        backend=backend,
        batch_size=recipe.trainer.batch_size,
        workers=(
            default_num_workers()
            if recipe.data.loader.num_workers is None
            else recipe.data.loader.num_workers
        ),
        batches=batches,
        loader=loader_rate,
        model=model_rate,
        together=together,
    )
