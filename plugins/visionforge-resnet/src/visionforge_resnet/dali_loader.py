"""``data.loader.backend: dali``: an NVIDIA DALI pipeline decodes, crops, resizes and flips.

DALI decodes only each image's crop box (``fn.decoders.image_slice``: region-of-interest
decoding with libjpeg-turbo on the CPU, nvJPEG through the ``mixed`` decoder when the
training device is a CUDA GPU), resizes it to ``image_size`` (``fn.resize``, antialiased,
the recipe's interpolation) and mirrors it (``fn.crop_mirror_normalize``) into uint8
``[B, 3, S, S]`` batches; its ``num_threads`` are ``data.loader.num_workers``.

Boxes and flips are not drawn by DALI's random operators (their RNG belongs to the
pipeline, so a run cannot restart them at a step): they are the :mod:`~visionforge_resnet.plans`
every backend shares, drawn on the host from ``(seed, epoch, index)`` in the order of the
trainer's resumable, rank-sharded sampler. Batches therefore do not depend on threads,
prefetching or where a run was resumed. File reading runs one batch ahead in a thread and
DALI one batch ahead in another; the plans are drawn in the calling thread, because their
seeding touches the process-wide RNGs the training step uses too.

``nvidia.dali`` is imported here only: import this module after checking
:func:`visionforge_resnet.backends.dali_missing`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types
import torch
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.plugin.pytorch import feed_ndarray

from visionforge.engine.data import SampleKey, SeededDataset
from visionforge.errors import StorageError
from visionforge_resnet.configs import ImageNetFolderConfig
from visionforge_resnet.plans import CropPlan, EncodedSample, draw_plan, read_sample

INTERPOLATION = {
    "bilinear": types.DALIInterpType.INTERP_LINEAR,
    "bicubic": types.DALIInterpType.INTERP_CUBIC,
}

ReadBatch = list[tuple[SampleKey, EncodedSample]]


def build_pipeline(
    cfg: ImageNetFolderConfig, batch_size: int, threads: int, device_id: int | None
) -> Pipeline:
    """The DALI graph: encoded bytes, crop anchor/shape and flip in; uint8 CHW images out.
    ``device_id`` None: all on the CPU; else nvJPEG (``mixed``) and resize on that GPU."""
    pipe = Pipeline(
        batch_size=batch_size,
        num_threads=threads,
        device_id=device_id,
        exec_async=False,
        exec_pipelined=False,
        prefetch_queue_depth=1,
    )
    with pipe:
        encoded = fn.external_source(name="encoded", dtype=types.DALIDataType.UINT8, ndim=1)
        anchor = fn.external_source(name="anchor", dtype=types.DALIDataType.INT32, ndim=1)
        shape = fn.external_source(name="shape", dtype=types.DALIDataType.INT32, ndim=1)
        flip = fn.external_source(name="flip", dtype=types.DALIDataType.INT32, ndim=0)
        decoded = fn.decoders.image_slice(
            encoded,
            anchor,
            shape,
            device="cpu" if device_id is None else "mixed",
            output_type=types.DALIImageType.RGB,
            axis_names="HW",
            normalized_anchor=False,
            normalized_shape=False,
            adjust_orientation=False,  # as torchvision and simplejpeg: EXIF not applied
        )
        resized: Any = fn.resize(  # the stub allows a list or None: one node here
            decoded,
            size=[cfg.image_size, cfg.image_size],
            interp_type=INTERPOLATION[cfg.interpolation],
            antialias=True,
        )
        images = fn.crop_mirror_normalize(
            resized, dtype=types.DALIDataType.UINT8, output_layout="CHW", mirror=flip
        )
        pipe.set_outputs(images)
    pipe.build()
    return pipe


class _SizedPlans:
    """``[index]`` draws the plan of a sample whose header size was read already."""

    def __init__(self, cfg: ImageNetFolderConfig) -> None:
        self.cfg = cfg
        self.sizes: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: int) -> CropPlan:
        return draw_plan(self.cfg, *self.sizes[index])


class DaliLoader:
    """A :class:`~visionforge.interfaces.BatchLoader` of ``{"image": uint8 [B,3,S,S],
    "label": int64 [B]}`` batches over the keys of ``sampler``, decoded by DALI."""

    def __init__(
        self,
        seeded: SeededDataset,
        sampler: Any,
        batch_size: int,
        *,
        threads: int,
        device: torch.device,
        pin_memory: bool,
    ) -> None:
        self.dataset = seeded
        self.folder: Any = seeded.dataset
        self.cfg: ImageNetFolderConfig = self.folder.config
        self.sampler = sampler
        self.batch_size = batch_size
        self.device = device
        self.pin_memory = pin_memory and device.type == "cuda"
        gpu = device.type == "cuda"
        device_id = (
            (device.index if device.index is not None else torch.cuda.current_device())
            if gpu
            else None
        )
        self.backend = "dali-mixed" if gpu else "dali-cpu"
        self.pipeline = build_pipeline(self.cfg, batch_size, max(1, threads), device_id)
        self.plans = SeededDataset(_SizedPlans(self.cfg), seeded.seed)

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def _read(self, keys: list[SampleKey]) -> ReadBatch:
        return [(key, read_sample(self.folder, key[1])) for key in keys]

    def _draw(self, batch: ReadBatch) -> list[CropPlan]:
        """Plans of the batch, seeded per sample like every backend (calling thread only)."""
        sized = self.plans.dataset
        assert isinstance(sized, _SizedPlans)
        sized.sizes = {key[1]: sample.size for key, sample in batch}
        return [self.plans[key] for key, _ in batch]

    def _run(self, batch: ReadBatch, plans: list[CropPlan]) -> dict[str, torch.Tensor]:
        pipe = self.pipeline
        pipe.feed_input("encoded", [np.frombuffer(s.data, np.uint8) for _, s in batch])
        pipe.feed_input("anchor", [np.array([p.box.top, p.box.left], np.int32) for p in plans])
        pipe.feed_input("shape", [np.array([p.box.height, p.box.width], np.int32) for p in plans])
        pipe.feed_input("flip", [np.array(int(p.flip), np.int32) for p in plans])
        try:
            (images,) = pipe.run()
        except RuntimeError as err:
            first = next((line for line in str(err).splitlines() if line.strip()), "error")
            raise StorageError(
                f"DALI could not decode the batch of {batch[0][1].path} and {len(batch) - 1} more "
                f"files ({first.strip()}); find the file with backend: torch"
            ) from None
        dense = images.as_tensor()
        shape = tuple(dense.shape())
        if self.backend == "dali-mixed":
            out = torch.empty(shape, dtype=torch.uint8, device=self.device)
            feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(self.device))
        else:
            out = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin_memory)
            feed_ndarray(dense, out)
        labels = torch.tensor([sample.label for _, sample in batch], dtype=torch.int64)
        return {"image": out, "label": labels}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        keys = list(iter(self.sampler))
        chunks = [keys[i : i + self.batch_size] for i in range(0, len(keys), self.batch_size)]
        reader = ThreadPoolExecutor(1, thread_name_prefix="dali-read")
        runner = ThreadPoolExecutor(1, thread_name_prefix="dali-run")
        reads: deque[Future[ReadBatch]] = deque()
        runs: deque[Future[dict[str, torch.Tensor]]] = deque()
        try:
            for chunk in chunks[:2]:
                reads.append(reader.submit(self._read, chunk))
            submitted = len(reads)
            for _ in chunks:
                while len(runs) < 2 and reads:  # DALI one batch ahead of the caller
                    batch = reads.popleft().result()
                    if submitted < len(chunks):
                        reads.append(reader.submit(self._read, chunks[submitted]))
                        submitted += 1
                    runs.append(runner.submit(self._run, batch, self._draw(batch)))
                yield runs.popleft().result()
        finally:
            reader.shutdown(wait=True, cancel_futures=True)
            runner.shutdown(wait=True, cancel_futures=True)
