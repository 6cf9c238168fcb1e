"""The ``retrieval`` evaluator: nearest-neighbour accuracy of queries against a gallery."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist

from visionforge.errors import ConfigError
from visionforge_distill.configs import RetrievalConfig
from visionforge_distill.data import GALLERY, QUERY
from visionforge_distill.index import CosineIndex, topk_accuracy


class RetrievalEvaluator:
    """Embeds a ``class_folders`` dataset with ``role: retrieval`` (gallery items, then
    queries) and reports top-k cosine nearest-neighbour accuracy.

    With ``approximate``, HNSW results are also compared to exact search:
    ``recall@k_vs_exact`` is the fraction of exact top-k neighbours the index found.
    """

    primary_metric = "top1"
    mode: Literal["max", "min"] = "max"

    def __init__(self, cfg: RetrievalConfig) -> None:
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        self._embeddings: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._roles: list[torch.Tensor] = []
        self._order: list[torch.Tensor] = []

    def update(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        if "role" not in batch or "embedding" not in outputs:
            raise ConfigError(
                "evaluator: retrieval needs a model returning 'embedding' and a val dataset "
                "class_folders with role: retrieval (gallery + queries)"
            )
        self._embeddings.append(outputs["embedding"].detach().float().cpu())
        self._labels.append(torch.as_tensor(batch["label"]).cpu())
        self._roles.append(torch.as_tensor(batch["role"]).cpu())
        self._order.append(torch.as_tensor(batch["index"]).cpu())

    def _gathered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = [
            torch.cat(x) if x else torch.empty(0)
            for x in (self._embeddings, self._labels, self._roles, self._order)
        ]
        if dist.is_available() and dist.is_initialized():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, parts)
            parts = [torch.cat([g[i] for g in gathered]) for i in range(4)]
        embeddings, labels, roles, order = parts
        unique = np.unique(order.numpy(), return_index=True)[1]  # sampler padding repeats
        return embeddings.numpy()[unique], labels.numpy()[unique], roles.numpy()[unique]

    def compute(self) -> dict[str, float]:
        embeddings, labels, roles = self._gathered()
        gallery, queries = roles == GALLERY, roles == QUERY
        if not gallery.any() or not queries.any():
            raise ConfigError("evaluator: retrieval saw no gallery or no query items")
        index = CosineIndex(embeddings[gallery], self.cfg.backend, self.cfg.approximate)
        k = max(self.cfg.k)
        _, ids = index.search(embeddings[queries], k)
        gallery_labels = labels[gallery]
        metrics = topk_accuracy(gallery_labels[ids], labels[queries], self.cfg.k)
        if self.cfg.approximate:
            exact = CosineIndex(embeddings[gallery], "torch")
            _, exact_ids = exact.search(embeddings[queries], k)
            found = [len(set(a) & set(b)) for a, b in zip(ids, exact_ids, strict=True)]
            metrics[f"recall@{k}_vs_exact"] = float(np.mean(found) / exact_ids.shape[1])
        return metrics


def build_retrieval(cfg: RetrievalConfig) -> RetrievalEvaluator:
    """Registry builder of the ``retrieval`` evaluator."""
    return RetrievalEvaluator(cfg)
