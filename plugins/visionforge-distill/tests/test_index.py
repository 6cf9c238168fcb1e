"""Index backends agree (ties included); approximate search reports recall vs exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visionforge.errors import ConfigError
from visionforge_distill.configs import RetrievalConfig
from visionforge_distill.evaluator import RetrievalEvaluator
from visionforge_distill.index import CosineIndex, installed, topk_accuracy

BACKENDS = [b for b in ("torch", "faiss", "usearch") if installed(b)]


def clustered(
    classes: int, per_class: int, dim: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    return (centres[labels] + noise * rng.normal(size=(len(labels), dim))).astype(
        np.float32
    ), labels


def test_all_installed_backends_are_tested_here() -> None:
    assert "faiss" in BACKENDS and "usearch" in BACKENDS  # the dev environment has both


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    duplicates=st.integers(0, 6),
    k=st.integers(1, 8),
)
def test_exact_backends_return_identical_neighbours_with_ties(
    seed: int, duplicates: int, k: int
) -> None:
    gallery, _ = clustered(12, 3, 16, 0.5, seed)
    rng = np.random.default_rng(seed + 1)
    # exact ties: copies (scaled: same cosine) of gallery rows at other ids
    for target in rng.choice(len(gallery), size=duplicates, replace=False):
        gallery = np.concatenate([gallery, gallery[target : target + 1] * 2.0])
    queries = np.concatenate([gallery[:5] + 0.01, rng.normal(size=(5, 16)).astype(np.float32)])
    results = {b: CosineIndex(gallery, b).search(queries, k) for b in BACKENDS}
    want_scores, want_ids = results["torch"]
    for backend, (scores, ids) in results.items():
        np.testing.assert_array_equal(ids, want_ids, err_msg=backend)
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-12)
    # ties are ordered by gallery id
    for row_s, row_i in zip(want_scores, want_ids, strict=True):
        for a in range(len(row_i) - 1):
            assert row_s[a] > row_s[a + 1] or row_i[a] < row_i[a + 1]


def test_exact_search_matches_brute_force() -> None:
    gallery, _ = clustered(50, 1, 32, 0.0, 0)
    queries, _ = clustered(50, 2, 32, 0.3, 0)
    _, ids = CosineIndex(gallery, "torch").search(queries, 3)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    np.testing.assert_array_equal(ids[:, 0], (q @ g.T).argmax(1))


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_approximate_search_reports_recall_against_exact(backend: str) -> None:
    gallery, labels = clustered(300, 1, 32, 0.0, 1)
    queries, query_labels = clustered(300, 2, 32, 0.4, 1)
    evaluator = RetrievalEvaluator(RetrievalConfig(backend=backend, approximate=True))
    import torch

    evaluator.update(
        {"embedding": torch.from_numpy(np.concatenate([gallery, queries]))},
        {
            "label": torch.from_numpy(np.concatenate([labels, query_labels])),
            "role": torch.tensor([0] * len(gallery) + [1] * len(queries)),
            "index": torch.arange(len(gallery) + len(queries)),
        },
    )
    metrics = evaluator.compute()
    assert 0.9 <= metrics["recall@5_vs_exact"] <= 1.0
    assert metrics["top1"] > 0.9


def test_toy_gallery_retrieval_beats_chance_widely_on_every_backend() -> None:
    gallery, labels = clustered(40, 1, 24, 0.0, 2)
    queries, query_labels = clustered(40, 3, 24, 0.6, 2)
    chance = 1 / 40
    for backend in BACKENDS:
        _, ids = CosineIndex(gallery, backend).search(queries, 5)
        metrics = topk_accuracy(labels[ids], query_labels, (1, 5))
        assert metrics["top1"] > 20 * chance and metrics["top5"] >= metrics["top1"], backend


def test_torch_cannot_search_approximately() -> None:
    with pytest.raises(ConfigError, match="needs faiss-cpu or usearch"):
        CosineIndex(np.ones((3, 4), np.float32), "torch", approximate=True)


def test_a_single_query_gives_the_batch_answer_on_every_backend() -> None:
    gallery, _ = clustered(20, 2, 8, 0.3, 4)
    for backend in BACKENDS:
        index = CosineIndex(gallery, backend)
        _, batch_ids = index.search(gallery[:3], 4)
        for row in range(3):
            _, ids = index.search(gallery[row : row + 1], 4)
            np.testing.assert_array_equal(ids[0], batch_ids[row], err_msg=backend)


@pytest.mark.skipif(not installed("usearch"), reason="usearch not installed")
def test_usearch_exact_is_a_flat_scan_and_hnsw_is_saved_and_reloaded(tmp_path: Path) -> None:
    gallery, _ = clustered(60, 1, 16, 0.0, 5)
    queries, _ = clustered(60, 2, 16, 0.5, 5)
    exact = CosineIndex(gallery, "usearch")
    assert exact.save(tmp_path) is None and not list(tmp_path.iterdir())  # no graph built
    _, want = CosineIndex(gallery, "torch").search(queries, 5)
    for index in (exact, CosineIndex.load(tmp_path, gallery, "usearch", approximate=False)):
        np.testing.assert_array_equal(index.search(queries, 5)[1], want)
    hnsw = CosineIndex(gallery, "usearch", approximate=True)
    assert hnsw.save(tmp_path) == "index.usearch"
    reloaded = CosineIndex.load(tmp_path, gallery, "usearch", approximate=True)
    np.testing.assert_array_equal(reloaded.search(queries, 5)[1], hnsw.search(queries, 5)[1])
