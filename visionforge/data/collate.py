"""Collate functions for batches of dict items."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import default_collate


def collate_with_lists(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Collate dict items, keeping what cannot be stacked as per-item lists.

    Per key: tensors of one shape are stacked, tensors of different shapes (e.g. detection
    images of varying size) become a list, mappings (per-item detection targets with a
    variable number of boxes) become a list of dicts, everything else goes through torch's
    ``default_collate`` (ints -> int64 tensor, strings -> list).
    """
    if not items:
        raise ValueError("collate_with_lists: got an empty list of items")
    keys = items[0].keys()
    for position, item in enumerate(items[1:], start=1):
        if item.keys() != keys:
            raise ValueError(
                f"collate_with_lists: item {position} has keys {sorted(item.keys())}, "
                f"item 0 has {sorted(keys)}; every item of a dataset needs the same keys"
            )
    batch: dict[str, Any] = {}
    for key in keys:
        values = [item[key] for item in items]
        first = values[0]
        ragged = isinstance(first, torch.Tensor) and any(v.shape != first.shape for v in values)
        if ragged or isinstance(first, Mapping):
            batch[key] = list(values)
        else:
            batch[key] = default_collate(values)
    return batch
