"""Lineage manifests for the datasets the plugin writes (``visionforge lineage PATH``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from visionforge.lineage import write_manifest

DATASET_KIND = "dataset"


def record_dataset(
    annotations: str | os.PathLike[str], parents: Iterable[str | os.PathLike[str]], **extra: Any
) -> None:
    """Write ``annotations``'s manifest (kind ``dataset``) after the dataset is complete."""
    write_manifest(
        os.fspath(annotations),
        DATASET_KIND,
        parents=[os.fspath(p) for p in parents],
        extra=extra,
    )
