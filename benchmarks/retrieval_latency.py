"""Benchmark: retrieval query latency at 17,592 gallery entries, each index backend vs brute force.

    python benchmarks/retrieval_latency.py --gallery 17592 --dim 768 --queries 300

The gallery is clustered random unit vectors (one per class, as in the card project);
queries are noisy copies of gallery rows. Brute force is a float32 torch matmul + argmax
per query (what a hand-written matcher does). Each ``CosineIndex`` backend answers the same
single-image queries (the device's case); the table shows median and p90 latency, the ratio
to brute force, and how many top-1 results equal brute force's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from visionforge_distill.index import CosineIndex, installed, normalize

WIDTHS = (10, 9, 10, 15, 9)


def timed(
    fn: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, repeat: int
) -> tuple[list[float], np.ndarray]:
    """Per-query latencies (ms, best of ``repeat`` per query) and top-1 ids."""
    latencies, top1 = [], []
    for q in queries:
        row = q[None]
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            ids = fn(row)
            best = min(best, time.perf_counter() - start)
        latencies.append(best * 1000)
        top1.append(int(ids[0]))
    return latencies, np.asarray(top1)


def top1_of(index: CosineIndex, row: np.ndarray) -> np.ndarray:
    return index.search(row, 1)[1][:, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=17592)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch/faiss threads (a Pi: 4)")
    parser.add_argument("--backends", nargs="+", default=["torch", "faiss", "usearch"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    gallery = normalize(rng.normal(size=(args.gallery, args.dim)).astype(np.float32))
    picks = rng.integers(0, args.gallery, args.queries)
    queries = normalize(gallery[picks] + 0.05 * rng.normal(size=(args.queries, args.dim)))
    if installed("faiss"):
        import faiss

        faiss.omp_set_num_threads(args.threads)
    table = torch.from_numpy(gallery)

    def brute(row: np.ndarray) -> np.ndarray:
        return (torch.from_numpy(row) @ table.T).argmax(1).numpy()

    base_lat, base_top1 = timed(brute, queries, args.repeat)
    base = statistics.median(base_lat)
    print(
        f"gallery {args.gallery} x {args.dim}, {args.queries} single queries, "
        f"{args.threads} thread(s)"
    )
    header = ("median ms", "p90 ms", "vs brute", "top-1 = brute", "build s")
    print(f"{'method':<22}" + "".join(f"{h:>{w}}" for h, w in zip(header, WIDTHS, strict=True)))
    p90 = np.percentile(base_lat, 90)
    print(f"{'brute force (torch)':<22}{base:>10.3f}{p90:>9.3f}{1.0:>9.2f}x{'-':>15}{'-':>9}")
    for backend in args.backends:
        if not installed(backend):
            print(f"{backend:<22} not installed")
            continue
        for approximate in (False, True) if backend != "torch" else (False,):
            start = time.perf_counter()
            index = CosineIndex(gallery, backend, approximate)
            build = time.perf_counter() - start
            lat, top1 = timed(partial(top1_of, index), queries, args.repeat)
            med = statistics.median(lat)
            same = int((top1 == base_top1).sum())
            name = f"{backend} {'hnsw' if approximate else 'exact'}"
            print(
                f"{name:<22}{med:>10.3f}{np.percentile(lat, 90):>9.3f}{base / med:>9.2f}x"
                f"{f'{same}/{len(top1)}':>15}{build:>9.2f}"
            )


if __name__ == "__main__":
    main()
