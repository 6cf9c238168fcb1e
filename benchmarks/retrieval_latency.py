"""Benchmark: retrieval query latency at 17,592 gallery entries, each index backend vs brute force.

    python benchmarks/retrieval_latency.py --gallery 17592 --dim 768 --queries 200

The gallery is random unit vectors (one per class, as in the card project); queries are noisy
copies of gallery rows. Brute force is a float32 torch matmul + argmax per query (what a
hand-written matcher does). Each ``CosineIndex`` backend answers the same single-image queries
(the device's case) in the same run, the methods taking turns on each query: torch, faiss
``IndexFlatIP`` and usearch's exhaustive ``search(exact=True)`` (exact), then faiss and
usearch HNSW (approximate). The table shows the median latency with its p10-p90 spread, the
ratio to brute force, how many top-1 results equal brute force's, recall@10 against brute
force's top-10, and the build time. Every backend runs
on ``--threads`` threads; the load average before and after is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from visionforge_distill.index import CosineIndex, installed, normalize

HEADER = ("median ms", "p10 ms", "p90 ms", "vs brute", "top-1 = brute", "recall@10", "build s")
WIDTHS = (10, 8, 8, 9, 14, 10, 9)
RECALL_K = 10


def timed(
    methods: dict[str, Callable[[np.ndarray], np.ndarray]], queries: np.ndarray, repeat: int
) -> dict[str, tuple[list[float], np.ndarray]]:
    """Per method: per-query latencies (ms, best of ``repeat``) and top-1 ids. Methods take
    turns on each query (in a rotating order), so load changes hit them all alike."""
    names = list(methods)
    latencies: dict[str, list[float]] = {n: [] for n in names}
    top1: dict[str, list[int]] = {n: [] for n in names}
    for i, q in enumerate(queries):
        row = q[None]
        for name in names[i % len(names) :] + names[: i % len(names)]:
            best = float("inf")
            for _ in range(repeat):
                start = time.perf_counter()
                ids = methods[name](row)
                best = min(best, time.perf_counter() - start)
            latencies[name].append(best * 1000)
            top1[name].append(int(ids[0]))
    return {n: (latencies[n], np.asarray(top1[n])) for n in names}


def top1_of(index: CosineIndex, row: np.ndarray) -> np.ndarray:
    return index.search(row, 1)[1][:, 0]


def row(name: str, lat: list[float], base: float, same: str, recall: str, build: str) -> str:
    p10, p90 = np.percentile(lat, [10, 90])
    med = statistics.median(lat)
    cells = (f"{med:.3f}", f"{p10:.3f}", f"{p90:.3f}", f"{base / med:.2f}x", same, recall, build)
    return f"{name:<16}" + "".join(f"{c:>{w}}" for c, w in zip(cells, WIDTHS, strict=True))


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=17592)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="threads of every backend")
    parser.add_argument("--backends", nargs="+", default=["torch", "faiss", "usearch"])
    parser.add_argument("--no-hnsw", action="store_true", help="skip the approximate rows")
    args = parser.parse_args()
    print(load())
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

    methods: dict[str, Callable[[np.ndarray], np.ndarray]] = {"brute (torch)": brute}
    indexes: dict[str, tuple[CosineIndex, float]] = {}
    skipped = []
    for approximate in (False, True) if not args.no_hnsw else (False,):
        for backend in args.backends:
            if approximate and backend == "torch":
                continue
            name = f"{backend} {'hnsw' if approximate else 'exact'}"
            if not installed(backend):
                skipped.append(
                    f"{name:<16} not installed: pip install 'visionforge-distill[{backend}]'"
                )
                continue
            start = time.perf_counter()
            index = CosineIndex(gallery, backend, approximate, threads=args.threads)
            indexes[name] = (index, time.perf_counter() - start)
            methods[name] = partial(top1_of, index)
            print(f"built {name} in {indexes[name][1]:.2f} s", flush=True)
    results = timed(methods, queries, args.repeat)
    base_lat, base_top1 = results.pop("brute (torch)")
    base_top10 = (torch.from_numpy(queries) @ table.T).topk(RECALL_K, dim=1).indices.numpy()
    base = statistics.median(base_lat)
    print(
        f"gallery {args.gallery} x {args.dim}, {args.queries} single queries (best of "
        f"{args.repeat} each, methods interleaved), {args.threads} thread(s)"
    )
    print(f"{'method':<16}" + "".join(f"{h:>{w}}" for h, w in zip(HEADER, WIDTHS, strict=True)))
    print(row("brute (torch)", base_lat, base, "-", "-", "-"))
    for name, (lat, top1) in results.items():
        index, build = indexes[name]
        top10 = index.search(queries, RECALL_K)[1]
        found = [len(set(a) & set(b)) for a, b in zip(top10, base_top10, strict=True)]
        recall = f"{np.mean(found) / RECALL_K:.4f}"
        same = f"{int((top1 == base_top1).sum())}/{len(top1)}"
        print(row(name, lat, base, same, recall, f"{build:.2f}"))
    for line in skipped:
        print(line)
    print(load())


if __name__ == "__main__":
    main()
