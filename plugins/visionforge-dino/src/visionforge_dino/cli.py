"""``visionforge dino`` commands: ``build-ops`` and ``doctor`` (torch imported on use)."""

from __future__ import annotations

import argparse
import shutil
import time


def add_dino_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``dino`` command group to the ``visionforge`` parser."""
    dino = subparsers.add_parser("dino", help="DETR/DINO tools: compiled ops build and doctor")
    commands = dino.add_subparsers(dest="dino_command", metavar="COMMAND", required=True)

    build = commands.add_parser(
        "build-ops",
        help="compile the deformable-attention kernels ahead of time into the cache",
        description=(
            "Compile the C++ CPU kernel and, where a CUDA toolkit is found, the CUDA kernel "
            "into the ops cache ($VISIONFORGE_CACHE_DIR/dino-ops, else "
            "~/.cache/visionforge/dino-ops). TORCH_CUDA_ARCH_LIST chooses the CUDA archs."
        ),
    )
    build.add_argument(
        "--backend",
        choices=("all", "cpu", "cuda"),
        default="all",
        help="what to build; 'all' builds cpu and, where a toolkit is found, cuda",
    )
    build.add_argument("--force", action="store_true", help="delete a cached build first")
    build.add_argument("--verbose", action="store_true", help="show the compiler commands")
    build.set_defaults(func=cmd_build_ops)

    doctor = commands.add_parser(
        "doctor",
        help="versions, compilers, arch list, built and active backends, fixes",
    )
    doctor.add_argument(
        "--no-check",
        action="store_true",
        help="do not load built kernels for a numeric self-check",
    )
    doctor.set_defaults(func=cmd_doctor)


def cmd_build_ops(args: argparse.Namespace) -> int:
    """Build the requested backends; exit 1 if an explicitly requested one cannot be built."""
    from tqdm.auto import tqdm

    from visionforge_dino.ops import build
    from visionforge_dino.ops.errors import OpsBuildError

    tools = build.find_toolchain()
    wanted = ["cpu", "cuda"] if args.backend == "all" else [args.backend]
    failed = False
    progress = tqdm(wanted, desc="build-ops", unit="kernel", disable=None)
    for backend in progress:
        progress.set_postfix_str(backend)
        spec = build.build_spec(backend, tools)
        if args.force and spec.directory.exists():
            shutil.rmtree(spec.directory)
        library = build.built_library(spec)
        if library is not None:
            progress.write(f"{backend}: already built: {library}")
            continue
        missing = build.missing_requirement(backend, tools)
        if missing and args.backend == "all" and backend == "cuda":
            progress.write(f"{backend}: skipped: {missing}")
            continue
        started = time.perf_counter()
        try:
            library = build.build(spec, tools, verbose=args.verbose)
        except OpsBuildError as err:
            if args.backend != "all":
                raise
            progress.write(f"{backend}: FAILED: {err}")
            failed = True
            continue
        progress.write(f"{backend}: built in {time.perf_counter() - started:.0f} s: {library}")
    return 1 if failed else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print the doctor report; exit 1 when a built kernel fails its self-check."""
    from visionforge_dino.ops.doctor import diagnose

    report = diagnose(check=not args.no_check)
    print(report.format())
    return 0 if report.ok else 1
