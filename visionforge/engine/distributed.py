"""Process-group setup from torchrun's environment, and small collective helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from visionforge.errors import ConfigError

BACKEND_ENV = "VISIONFORGE_DIST_BACKEND"
"""Overrides the process-group backend (``gloo``/``nccl``); set by the local runner."""


@dataclass
class DistContext:
    """Where this process sits: rank, world size and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any_true(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank (a collective when distributed)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def choose_device(
    name: str, local_rank: int = 0, *, option: str = "trainer.device"
) -> torch.device:
    """The device ``auto``, ``cpu`` or ``cuda`` means here: ``auto`` is CUDA when there is a
    CUDA device, else the CPU; ``local_rank`` picks the GPU (modulo the count). ``cuda``
    without a CUDA device raises a ConfigError naming ``option`` (the field or flag)."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{option}: 'cuda' requested but no CUDA device is available; use cpu or auto"
            )
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device: str) -> DistContext:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1: gloo on CPU, nccl on CUDA,
    unless ``VISIONFORGE_DIST_BACKEND`` names one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = choose_device(device, local_rank)
    ctx = DistContext(rank, local_rank, world_size, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        backend = os.environ.get(BACKEND_ENV) or ("nccl" if dev.type == "cuda" else "gloo")
        # long collectives (gathering a large evaluation, checkpoint writes): a generous timeout
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=60))
        ctx.owns_group = True
    return ctx
