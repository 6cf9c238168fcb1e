"""Which external category id each class index of a detector stands for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from visionforge.interfaces import CategoryMapped


@dataclass
class LabelSpace:
    """A recorded label space (a checkpoint's): satisfies :class:`CategoryMapped`."""

    category_ids: list[int]
    class_names: list[str]


def adopt_label_space(model: Any, source: Any) -> None:
    """Give a detector built without its own label space the one of ``source`` (the training
    dataset, or the label space a checkpoint recorded).

    A :class:`CategoryMapped` model whose ``category_ids`` are the default ``0..K-1`` (none
    given in its config) and a source with the same number of classes: class ``i`` of the
    model is class ``i`` of the source, so the model takes its category ids and class names
    (which checkpoints, evaluation and predict then report). Models with a declared label
    space (official COCO-id weights) keep theirs and are mapped instead."""
    if not (isinstance(model, CategoryMapped) and isinstance(source, CategoryMapped)):
        return
    count = len(model.category_ids)
    if list(model.category_ids) != list(range(count)) or len(source.category_ids) != count:
        return
    model.category_ids = [int(c) for c in source.category_ids]
    model.class_names = [str(n) for n in source.class_names]
