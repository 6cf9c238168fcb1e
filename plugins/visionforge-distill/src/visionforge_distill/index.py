"""Cosine nearest-neighbour search over a gallery: faiss-cpu, usearch or torch.

Vectors are L2-normalized, so inner product is cosine similarity. Every backend returns a
few more candidates than asked; they are re-scored in float64 from the same float32 vectors
and ordered by (score descending, gallery id ascending), so exact search gives the same
neighbours, in the same order, on every backend (ties included).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from visionforge.errors import ConfigError

Backend = Literal["torch", "faiss", "usearch"]
BACKENDS: tuple[Backend, ...] = ("faiss", "usearch", "torch")
EXTRA_CANDIDATES = 16
HNSW_CONNECTIVITY = 32
HNSW_EXPANSION_ADD = 64  # candidate list while building (faiss efConstruction)
HNSW_EXPANSION_SEARCH = 128  # candidate list while searching (faiss efSearch)
INDEX_FILES = {"faiss": "index.faiss", "usearch": "index.usearch", "torch": None}


def installed(backend: str) -> bool:
    """True if ``backend`` can be used here."""
    if backend == "torch":
        return True
    module = {"faiss": "faiss", "usearch": "usearch"}[backend]
    return importlib.util.find_spec(module) is not None


def resolve_backend(name: str) -> Backend:
    """``auto`` -> faiss, else usearch, else torch; a named backend must be installed."""
    if name == "auto":
        return next(b for b in BACKENDS if installed(b))
    if name not in BACKENDS:
        raise ConfigError(f"backend: unknown index backend {name!r}; use one of {BACKENDS}")
    if not installed(name):
        raise ConfigError(
            f"backend: {name} is not installed; pip install 'visionforge-distill[{name}]'"
        )
    return name


def normalize(vectors: np.ndarray | torch.Tensor) -> np.ndarray:
    """float32 rows scaled to unit length (zero rows stay zero)."""
    array = np.ascontiguousarray(
        vectors.detach().cpu().float().numpy() if isinstance(vectors, torch.Tensor) else vectors,
        dtype=np.float32,
    )
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(array / np.maximum(norms, 1e-12), dtype=np.float32)


class CosineIndex:
    """A gallery of unit vectors searchable by cosine similarity on one backend.

    Exact search scans the whole gallery (faiss ``IndexFlatIP``, usearch's exhaustive
    ``search(exact=True)`` without building an index, a torch matmul); ``approximate`` builds
    an HNSW graph (faiss or usearch) instead. ``threads`` caps usearch's search threads
    (0: all cores); faiss and torch follow their global thread settings.
    """

    def __init__(
        self,
        gallery: np.ndarray,
        backend: str = "auto",
        approximate: bool = False,
        threads: int = 0,
    ) -> None:
        self.gallery = normalize(gallery)
        self.backend: Backend = resolve_backend(backend)
        self.approximate = approximate
        self.threads = threads
        if approximate and self.backend == "torch":
            raise ConfigError("approximate: HNSW search needs faiss-cpu or usearch installed")
        self._index: Any = self._build()

    @property
    def size(self) -> int:
        return int(self.gallery.shape[0])

    def _build(self) -> Any:
        dim = self.gallery.shape[1]
        if self.backend == "faiss":
            import faiss

            if not self.approximate:
                flat = faiss.IndexFlatIP(dim)
                flat.add(self.gallery)
                return flat
            hnsw = faiss.IndexHNSWFlat(dim, HNSW_CONNECTIVITY, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = HNSW_EXPANSION_ADD
            hnsw.hnsw.efSearch = HNSW_EXPANSION_SEARCH
            hnsw.add(self.gallery)
            return hnsw
        if self.backend == "usearch":
            if not self.approximate:
                return None  # usearch.index.search(exact=True) scans the gallery: no index
            from usearch.index import Index

            graph = Index(
                ndim=dim,
                metric="ip",
                dtype="f32",
                connectivity=HNSW_CONNECTIVITY,
                expansion_add=HNSW_EXPANSION_ADD,
                expansion_search=HNSW_EXPANSION_SEARCH,
            )
            graph.add(np.arange(self.size, dtype=np.uint64), self.gallery, threads=self.threads)
            return graph
        return torch.from_numpy(self.gallery)

    def _candidates(self, queries: np.ndarray, count: int) -> np.ndarray:
        """``[Q, count]`` gallery ids (-1 pads where a backend found fewer)."""
        if self.backend == "faiss":
            _, ids = self._index.search(queries, count)
            return np.asarray(ids, dtype=np.int64)
        if self.backend == "usearch":
            from usearch.index import BatchMatches, MetricKind, search

            if self.approximate:
                found = self._index.search(queries, count, threads=self.threads)
            else:
                found = search(
                    self.gallery, queries, count, MetricKind.IP, exact=True, threads=self.threads
                )
            keys = np.asarray(found.keys, dtype=np.int64).reshape(len(queries), -1)
            # one query gives Matches (its keys are all found), several give BatchMatches
            counts = found.counts if isinstance(found, BatchMatches) else [len(found.keys)]
            for row, valid in enumerate(np.asarray(counts).reshape(-1)):
                keys[row, int(valid) :] = -1
            return keys
        scores = torch.from_numpy(queries) @ self._index.T
        return scores.topk(count, dim=1).indices.numpy().astype(np.int64)

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores ``[Q, k]`` float64, gallery ids ``[Q, k]``) of the ``k`` nearest, best first."""
        unit = normalize(queries)
        k = min(k, self.size)
        count = min(self.size, k + EXTRA_CANDIDATES)
        ids = self._candidates(unit, count)
        return rerank(self.gallery, unit, ids, k)

    def save(self, folder: Path) -> str | None:
        """Write the backend's index file into ``folder``; its name (None for torch)."""
        name = INDEX_FILES[self.backend]
        if name is None or self._index is None:
            return None  # torch and exact usearch search the saved embeddings themselves
        if self.backend == "faiss":
            import faiss

            faiss.write_index(self._index, str(folder / name))
        else:
            self._index.save(str(folder / name))
        return name

    @classmethod
    def load(
        cls, folder: Path, gallery: np.ndarray, backend: str, approximate: bool, threads: int = 0
    ) -> CosineIndex:
        """An index over ``gallery`` read from ``folder`` (as :meth:`save` wrote it)."""
        self = cls.__new__(cls)
        self.gallery = normalize(gallery)
        self.backend = resolve_backend(backend)
        self.approximate = approximate
        self.threads = threads
        name = INDEX_FILES[self.backend]
        if name is None:
            self._index = torch.from_numpy(self.gallery)
        elif self.backend == "usearch" and not approximate:
            self._index = None
        elif self.backend == "faiss":
            import faiss

            self._index = faiss.read_index(str(folder / name))
        else:
            from usearch.index import Index

            self._index = Index.restore(str(folder / name))
        return self


def rerank(
    gallery: np.ndarray, queries: np.ndarray, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidate ``ids`` in float64 and keep the ``k`` best by (score desc, id asc)."""
    safe = np.where(ids < 0, 0, ids)
    scores = np.einsum("qd,qcd->qc", queries.astype(np.float64), gallery[safe].astype(np.float64))
    scores = np.where(ids < 0, -np.inf, scores)
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -scores), axis=1)
    top = order[:, :k]
    return np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)


def topk_accuracy(
    neighbour_labels: np.ndarray, labels: np.ndarray, ks: tuple[int, ...]
) -> dict[str, float]:
    """``top{k}``: fraction of queries whose label is among their first k neighbours' labels."""
    hits = neighbour_labels == labels[:, None]
    return {f"top{k}": float(hits[:, :k].any(axis=1).mean()) if len(labels) else 0.0 for k in ks}
