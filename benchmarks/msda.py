"""Multi-scale deformable attention: our compiled kernel beside the PyTorch reference.

Prints forward, backward and forward+backward times (median of the repeats, the two
implementations alternating every repeat so both see the same load) and the peak memory of
one forward+backward, with the reference/ours ratios measured in the same run. Peak memory
is measured in a fresh process per implementation (GPU: torch.cuda.max_memory_allocated;
CPU: growth of the peak resident set size, Linux).

    python benchmarks/msda.py                       # cases for the device found
    python benchmarks/msda.py --device cpu --case cpu-small --repeats 5
    python benchmarks/msda.py --device cuda --case dino-encoder --case dino-decoder
    python benchmarks/msda.py --plot msda.png       # also a bar chart of the times

Cases: dino-encoder (batch 2, levels 100x167, 50x84, 25x42, 13x21 of an 800x1333 image,
8 heads x 32 channels, 4 points, queries = all 22223 tokens), dino-decoder (the same with
900 queries), cpu-small (batch 1, levels 25x42, 13x21, 7x11, 4x6, 8 x 32, 4 points,
queries = all 1424 tokens) and cpu-medium (batch 2, levels 50x84 ... 7x11, all tokens).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass

import torch
from peak_rss import reset_peak_rss, status_kib
from tqdm.auto import tqdm

from visionforge_dino.ops import backends, multi_scale_deformable_attention


@dataclass(frozen=True)
class Case:
    """One benchmark shape."""

    batch: int
    shapes: tuple[tuple[int, int], ...]
    heads: int = 8
    dim: int = 32
    points: int = 4
    queries: int | None = None  # None: every token (encoder self-attention)

    @property
    def keys(self) -> int:
        return sum(h * w for h, w in self.shapes)


DINO_LEVELS = ((100, 167), (50, 84), (25, 42), (13, 21))
CASES = {
    "dino-encoder": Case(batch=2, shapes=DINO_LEVELS),
    "dino-decoder": Case(batch=2, shapes=DINO_LEVELS, queries=900),
    "cpu-small": Case(batch=1, shapes=((25, 42), (13, 21), (7, 11), (4, 6))),
    "cpu-medium": Case(batch=2, shapes=((50, 84), (25, 42), (13, 21), (7, 11))),
}
DEFAULT_CASES = {"cuda": ["dino-encoder", "dino-decoder"], "cpu": ["cpu-small", "cpu-medium"]}


def _inputs(case: Case, device: str, dtype: torch.dtype) -> list[torch.Tensor]:
    """Inputs shaped like a trained model's: each query samples a few pixels (N(0, 2 px))
    around its reference point, which is the token's own center for encoder self-attention
    and a random point for decoder queries."""
    generator = torch.Generator().manual_seed(0)
    levels = len(case.shapes)
    if case.queries is None:
        centers = []
        for height, width in case.shapes:
            ys, xs = torch.meshgrid(
                (torch.arange(height) + 0.5) / height,
                (torch.arange(width) + 0.5) / width,
                indexing="ij",
            )
            centers.append(torch.stack([xs, ys], dim=-1).reshape(-1, 2))
        reference = torch.cat(centers).expand(case.batch, -1, -1)
    else:
        reference = torch.rand(case.batch, case.queries, 2, generator=generator)
    queries = reference.shape[1]
    sizes = torch.tensor([[w, h] for h, w in case.shapes], dtype=torch.float32)
    offsets = (
        torch.randn(case.batch, queries, case.heads, levels, case.points, 2, generator=generator)
        * 2.0
        / sizes[:, None, :]
    )
    locations = reference[:, :, None, None, None, :] + offsets
    value = torch.randn(case.batch, case.keys, case.heads, case.dim, generator=generator)
    weights = torch.rand(
        case.batch, queries, case.heads, levels * case.points, generator=generator
    ).softmax(-1)
    weights = weights.view(case.batch, queries, case.heads, levels, case.points)
    tensors = [value.to(dtype), locations, weights]
    return [t.to(device).requires_grad_() for t in tensors]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _step(
    inputs: list[torch.Tensor],
    shapes: list[tuple[int, int]],
    backend: str,
    grad: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float, float]:
    """One forward and backward; returns the output and both times in ms."""
    value, locations, weights = inputs
    for tensor in inputs:
        tensor.grad = None
    device = value.device.type
    _sync(device)
    start = time.perf_counter()
    out = multi_scale_deformable_attention(value, shapes, None, locations, weights, backend=backend)
    _sync(device)
    middle = time.perf_counter()
    out.backward(torch.ones_like(out) if grad is None else grad)
    _sync(device)
    end = time.perf_counter()
    return out.detach(), (middle - start) * 1e3, (end - middle) * 1e3


def time_interleaved(
    case_name: str, backends_: tuple[str, ...], device: str, dtype: torch.dtype, repeats: int
) -> dict[str, dict[str, float]]:
    """Median forward/backward/total ms per backend, alternating backends every repeat so
    that both see the same machine load."""
    case = CASES[case_name]
    inputs = _inputs(case, device, dtype)
    shapes = list(case.shapes)
    for backend in backends_:  # warm-up (lazy initialization, caches)
        _step(inputs, shapes, backend)
    times: dict[str, list[tuple[float, float]]] = {backend: [] for backend in backends_}
    for _ in tqdm(range(repeats), desc=case_name, leave=False, disable=None):
        for backend in backends_:
            _, forward_ms, backward_ms = _step(inputs, shapes, backend)
            times[backend].append((forward_ms, backward_ms))
    return {
        backend: {
            "forward_ms": statistics.median(f for f, _ in runs),
            "backward_ms": statistics.median(b for _, b in runs),
            "total_ms": statistics.median(f + b for f, b in runs),
        }
        for backend, runs in times.items()
    }


def peak_memory(case_name: str, backend: str, device: str, dtype: torch.dtype) -> float:
    """Peak memory (MiB) that one forward+backward adds on top of its inputs: on GPU from
    torch.cuda.max_memory_allocated, on CPU from the peak resident set size (VmHWM, reset
    just before the step)."""
    case = CASES[case_name]
    inputs = _inputs(case, device, dtype)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _step(inputs, list(case.shapes), backend)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    gc.collect()
    base = reset_peak_rss()
    _step(inputs, list(case.shapes), backend)
    return (status_kib("VmHWM") - base) / 1024


def _memory_in_subprocess(case: str, backend: str, device: str, dtype: str) -> float:
    command = [sys.executable, __file__, "--memory", case, backend, device, dtype]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measuring memory of {case}/{backend} failed:\n{done.stderr.strip()}")
    return float(done.stdout.strip().splitlines()[-1])


def write_plot(results: dict[str, dict[str, dict[str, float]]], title: str, path: str) -> None:
    """Bar chart of forward and backward time per case, reference beside ours (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(results)
    figure, axes = plt.subplots(1, len(cases), figsize=(3.4 * len(cases), 4.0), squeeze=False)
    for axis, case in zip(axes[0], cases, strict=True):
        impls = list(results[case])
        forward = [results[case][impl]["forward_ms"] for impl in impls]
        backward = [results[case][impl]["backward_ms"] for impl in impls]
        labels = ["pytorch" if impl == "pytorch" else "ours" for impl in impls]
        axis.bar(labels, forward, label="forward", color="#4c72b0")
        axis.bar(labels, backward, bottom=forward, label="backward", color="#dd8452")
        totals = [results[case][impl]["total_ms"] for impl in impls]
        ratio = totals[0] / max(totals[1], 1e-9)
        axis.set_title(f"{case}\n{ratio:.1f}x faster", fontsize=10)
        axis.set_ylabel("ms (median)")
    axes[0][0].legend(fontsize=8)
    figure.suptitle(textwrap.fill(title, width=int(45 * len(cases))), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--case", action="append", choices=sorted(CASES), default=None)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--plot", metavar="PNG", help="also write a bar chart of the times")
    parser.add_argument("--memory", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory:
        case, backend, device, dtype = args.memory
        print(peak_memory(case, backend, device, getattr(torch, dtype)))
        return 0

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not backends.ensure_compiled(device):  # build once here, not in every worker
        raise SystemExit(f"the {device} kernel is not available: {backends.failure(device)}")
    cases = args.case or DEFAULT_CASES[device]
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    title = (
        f"multi-scale deformable attention, {args.dtype}, {where}, "
        f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}"
    )
    print(f"{title}, median of {args.repeats} (backends alternate every repeat)")
    header = (
        f"{'case':<13}{'impl':<9}{'forward ms':>11}{'backward ms':>13}"
        f"{'fwd+bwd ms':>12}{'peak MiB':>10}"
    )
    print(header)
    print("-" * len(header))
    impls = ("pytorch", device)
    results = {}
    for case in cases:
        rows = time_interleaved(case, impls, device, getattr(torch, args.dtype), args.repeats)
        results[case] = rows
        for impl in impls:
            rows[impl]["peak_mib"] = _memory_in_subprocess(case, impl, device, args.dtype)
            r = rows[impl]
            print(
                f"{case:<13}{'ours' if impl == device else impl:<9}{r['forward_ms']:>11.1f}"
                f"{r['backward_ms']:>13.1f}{r['total_ms']:>12.1f}{r['peak_mib']:>10.0f}"
            )
        ref, ours = rows["pytorch"], rows[device]
        ratios = [ref[k] / max(ours[k], 1e-9) for k in ("forward_ms", "backward_ms", "total_ms")]
        memory = ref["peak_mib"] / max(ours["peak_mib"], 1.0)
        print(
            f"{case:<13}{'ratio':<9}{ratios[0]:>10.1f}x{ratios[1]:>12.1f}x"
            f"{ratios[2]:>11.1f}x{memory:>9.1f}x"
        )
    if args.plot:
        write_plot(results, title, args.plot)
        print(f"chart: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
