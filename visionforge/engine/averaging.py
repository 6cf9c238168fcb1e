"""Means of named scalars over steps and processes, where each name counts only the steps
that reported it (losses whose keys differ between steps or ranks: auxiliary or
denoising terms present only sometimes)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist


def distributed() -> bool:
    """True inside an initialized process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def accumulate(
    sums: dict[str, torch.Tensor], counts: dict[str, int], values: Mapping[str, torch.Tensor]
) -> None:
    """Add one step's ``values`` (detached, as float) to ``sums`` and count each key."""
    for key, value in values.items():
        detached = value.detach().float()
        sums[key] = sums[key] + detached if key in sums else detached
        counts[key] = counts.get(key, 0) + 1


def global_means(
    sums: Mapping[str, torch.Tensor], counts: Mapping[str, int], device: torch.device
) -> dict[str, float]:
    """``sum / count`` per key, over every process when distributed (a collective: every
    rank must call it). A key seen on only some ranks is averaged over the steps that had
    it; keys are agreed on first, so ranks with different keys do not mismatch."""
    keys = sorted(sums)
    if distributed():
        gathered: list[list[str] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, keys)
        keys = sorted({key for part in gathered for key in part or []})
    if not keys:
        return {}
    zero = torch.zeros((), device=device)
    totals = torch.stack([sums.get(k, zero).to(device).reshape(()) for k in keys])
    steps = torch.tensor([float(counts.get(k, 0)) for k in keys], device=device)
    both = torch.stack([totals, steps.to(totals.dtype)])
    if distributed():
        dist.all_reduce(both)
    return {
        key: float(both[0, i]) / float(both[1, i])
        for i, key in enumerate(keys)
        if float(both[1, i]) > 0
    }
