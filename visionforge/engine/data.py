"""Resumable, rank-aware sampling and per-sample seeding of augmentation randomness.

Training order and augmentation depend only on ``(seed, epoch, index)``: the sampler draws
each epoch's permutation from ``(seed, epoch)`` and yields ``(epoch, index)`` keys, and
:class:`SeededDataset` seeds the RNGs from that key around each ``__getitem__``. Results
therefore do not depend on the number of loader workers or on where a run was resumed.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate
from torch.utils.data.dataloader import _BaseDataLoaderIter

from visionforge.config import LoaderConfig
from visionforge.cpus import usable_cpus
from visionforge.engine.signals import protect_loader_worker, stop_signals_blocked
from visionforge.errors import ConfigError
from visionforge.interfaces import BatchLoader, CollatingDataset, LoaderProvider

SampleKey = tuple[int, int]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1]))


class SeededDataset(Dataset[Any]):
    """Wraps a map-style dataset: item ``(epoch, index)`` is ``dataset[index]`` computed with
    torch, numpy and python RNGs seeded from ``(seed, epoch, index)``.

    The torch CPU generator's state is restored afterwards, so loading in the main process
    does not disturb the model's random stream (dropout). numpy's and python's global RNGs
    are left seeded (saving them costs more than the sample); the trainer reseeds them per
    batch before it uses them (mixup).
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> Any:
        epoch, index = key
        seed = sample_seed(self.seed, epoch, index)
        seed_host_rngs(seed)
        generator = torch.default_generator
        state = generator.get_state()
        try:
            generator.manual_seed(seed)
            return self.dataset[index]
        finally:
            generator.set_state(state)


def seed_host_rngs(seed: int) -> None:
    """Seed python's ``random`` and numpy's global RNG."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """Seed for batch-level randomness (mixup) of one micro-batch of one epoch."""
    return sample_seed(seed + 0x5EED, epoch, batch)


class ResumableSampler(Sampler[SampleKey]):
    """torch's DistributedSampler order, as ``(epoch, index)`` keys, with a start offset.

    The permutation of each epoch comes from ``(seed, epoch)``; rank ``r`` of ``world``
    takes every ``world``-th position, so positions ``k*world*B .. (k+1)*world*B`` form
    global batch ``k`` on every world size. ``drop_last`` keeps only whole global batches;
    otherwise the order is padded by wrapping around (DistributedSampler's rule).
    ``set_position`` starts an epoch at a given local sample offset (resume).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.world_size = world_size
        self.drop_last = drop_last
        self.order: DistributedSampler[int] = DistributedSampler(
            cast("Dataset[int]", range(num_samples)),  # only its length is used
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
        self.epoch = 0
        self.start = 0

    @property
    def samples_per_rank(self) -> int:
        if self.drop_last:
            global_batch = self.batch_size * self.world_size
            return (self.num_samples // global_batch) * self.batch_size
        return self.order.num_samples

    @property
    def batches_per_rank(self) -> int:
        return -(-self.samples_per_rank // self.batch_size)

    @property
    def dropped_per_epoch(self) -> int:
        """Samples left out of each epoch by ``drop_last`` (a different set every epoch)."""
        return max(0, self.num_samples - self.samples_per_rank * self.world_size)

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Start the next iteration at epoch ``epoch``, skipping ``start`` local samples."""
        self.epoch = epoch
        self.start = start
        self.order.set_epoch(epoch)

    def indices(self) -> list[int]:
        """This rank's indices for the current epoch, before the start offset."""
        return list(self.order)[: self.samples_per_rank]

    def __iter__(self) -> Iterator[SampleKey]:
        epoch = self.epoch
        for index in self.indices()[self.start :]:
            yield (epoch, index)

    def __len__(self) -> int:
        return max(0, self.samples_per_rank - self.start)


def collate_of(dataset: Any) -> Callable[[list[Any]], Any]:
    """The dataset's own ``collate_fn`` (a :class:`~visionforge.interfaces.CollatingDataset`),
    else torch's default_collate."""
    return dataset.collate_fn if isinstance(dataset, CollatingDataset) else default_collate


def unwrapped(dataset: Any) -> Any:
    """The user's dataset inside a :class:`SeededDataset` (``dataset`` itself otherwise)."""
    return dataset.dataset if isinstance(dataset, SeededDataset) else dataset


class StopSafeLoader(DataLoader[Any]):
    """A DataLoader whose workers start with SIGTERM/SIGINT blocked and then filter them
    (:func:`~visionforge.engine.signals.protect_loader_worker`): a stop signal sent to the
    process group never kills a worker, not even one that is just starting."""

    def __iter__(self) -> _BaseDataLoaderIter:
        with stop_signals_blocked():
            return super().__iter__()


MAX_DEFAULT_WORKERS = 8


def default_num_workers() -> int:
    """Loader workers when ``data.loader.num_workers`` is unset: the CPUs this process may
    use (``os.sched_getaffinity``) shared by the processes on this machine (torchrun's
    ``LOCAL_WORLD_SIZE``), at most 8."""
    per_process = usable_cpus() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(MAX_DEFAULT_WORKERS, per_process))


def make_loader(
    dataset: Any,
    sampler: Sampler[Any],
    batch_size: int,
    cfg: LoaderConfig,
    seed: int,
    pin_memory: bool,
    device: torch.device | None = None,
) -> DataLoader[Any] | BatchLoader:
    """The loader ``data.loader`` asks for: the dataset's own when it is a
    :class:`~visionforge.interfaces.LoaderProvider` that builds one, else
    :func:`torch_loader`. ``device`` is the training device batches go to."""
    inner = unwrapped(dataset)
    if isinstance(inner, LoaderProvider):
        own = inner.make_loader(
            dataset,
            sampler,
            batch_size,
            cfg,
            seed,
            pin_memory=pin_memory,
            device=device or torch.device("cpu"),
        )
        if own is not None:
            return own
    elif cfg.backend != "torch":
        raise ConfigError(
            f"data.loader.backend: {cfg.backend!r} needs a dataset that builds such a pipeline "
            f"(imagenet_folder does); {type(inner).__name__} does not: use backend: torch"
        )
    return torch_loader(dataset, sampler, batch_size, cfg, seed, pin_memory)


def torch_loader(
    dataset: Any,
    sampler: Sampler[Any],
    batch_size: int,
    cfg: LoaderConfig,
    seed: int,
    pin_memory: bool,
) -> DataLoader[Any]:
    """A :class:`StopSafeLoader` with its own generator (iterators never consume the global
    RNG)."""
    workers = cfg.num_workers if cfg.num_workers is not None else default_num_workers()
    extra: dict[str, Any] = {}
    if workers > 0:
        extra["persistent_workers"] = cfg.persistent_workers
        if cfg.prefetch_factor is not None:
            extra["prefetch_factor"] = cfg.prefetch_factor
    return StopSafeLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_of(unwrapped(dataset)),
        pin_memory=pin_memory,
        drop_last=False,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=protect_loader_worker if workers > 0 else None,
        **extra,
    )
