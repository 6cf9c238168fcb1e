"""Resumable sampling and per-sample seeding."""

from __future__ import annotations

import random

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from visionforge.engine.data import ResumableSampler, SeededDataset


class Noise(torch.utils.data.Dataset[torch.Tensor]):
    """Each item is drawn from the global torch, numpy and python RNGs."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([torch.rand(()).item(), np.random.rand(), random.random()])


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    batch=st.integers(1, 6),
    world=st.integers(1, 4),
    epoch=st.integers(0, 3),
    drop_last=st.booleans(),
)
def test_global_batches_do_not_depend_on_world_size(
    n: int, batch: int, world: int, epoch: int, drop_last: bool
) -> None:
    ranks = [
        ResumableSampler(n, batch, seed=7, rank=r, world_size=world, drop_last=drop_last)
        for r in range(world)
    ]
    single = ResumableSampler(n, batch * world, seed=7, drop_last=drop_last)
    for sampler in [*ranks, single]:
        sampler.set_position(epoch)
    per_rank = [[index for _, index in sampler] for sampler in ranks]
    assert all(len(indices) == len(ranks[0]) for indices, _ in zip(per_rank, ranks, strict=True))
    assert all(key[0] == epoch for key in ranks[0])
    whole = [index for _, index in single]
    if drop_last:
        assert len(whole) + single.dropped_per_epoch == n
        assert len(set(whole)) == len(whole)
        for k in range(len(whole) // (batch * world)):
            union = sorted(i for indices in per_rank for i in indices[k * batch : (k + 1) * batch])
            assert union == sorted(whole[k * batch * world : (k + 1) * batch * world])
    else:
        assert set(whole) == set(range(n))
        assert {i for indices in per_rank for i in indices} == set(range(n))


def test_start_offset_resumes_the_same_order() -> None:
    sampler = ResumableSampler(30, 4, seed=1)
    sampler.set_position(2)
    full = list(sampler)
    sampler.set_position(2, start=12)
    assert list(sampler) == full[12:] and len(sampler) == len(full) - 12
    sampler.set_position(3)
    assert [i for _, i in sampler] != [i for _, i in full]


def test_seeded_items_are_reproducible_and_leave_torch_rng_alone() -> None:
    dataset = SeededDataset(Noise(), seed=5)
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    first = dataset[(1, 3)]
    assert torch.equal(torch.rand(3), expected_next)  # the caller's stream is untouched
    assert torch.equal(dataset[(1, 3)], first)
    assert not torch.equal(dataset[(2, 3)], first)
    assert not torch.equal(dataset[(1, 4)], first)
    assert not torch.equal(SeededDataset(Noise(), seed=6)[(1, 3)], first)
