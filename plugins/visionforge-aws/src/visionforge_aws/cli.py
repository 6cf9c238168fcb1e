"""``visionforge aws ...`` commands (cheap to build: heavy imports happen when they run)."""

from __future__ import annotations

import argparse
import sys


def cmd_sync(args: argparse.Namespace) -> int:
    """Sync SRC to DST; exit 1 when any file failed (each is listed)."""
    from visionforge_aws.sync import sync

    report = sync(
        args.source,
        args.destination,
        concurrency=args.concurrency,
        processes=args.processes,
        retries=args.retries,
        delete=args.delete,
        dry_run=args.dry_run,
        progress=not args.quiet,
    )
    if args.dry_run:
        for key in report.transferred:
            print(f"would transfer: {key}")
        for key in report.deleted:
            print(f"would delete: {key}")
    for key, reason in sorted(report.failed.items()):
        print(f"failed: {key}: {reason}", file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1


def cmd_publish(args: argparse.Namespace) -> int:
    """Publish a run's artifacts and their lineage as a project on S3."""
    from visionforge_aws.publish import publish
    from visionforge_aws.publish_aws import plan_lifecycle

    lifecycle = None
    if args.lifecycle:
        lifecycle = plan_lifecycle(
            args.to, args.archive_prefix, args.archive_after, args.archive_class
        )
    elif args.archive_prefix:
        print("error: --archive-prefix needs --lifecycle", file=sys.stderr)
        return 2
    report = publish(
        args.sources,
        args.to,
        args.name,
        args.version,
        model_package_group=args.model_package_group,
        inference_image=args.inference_image,
        lifecycle=lifecycle,
        all_checkpoints=args.all_checkpoints,
        progress=not args.quiet,
    )
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if lifecycle is not None and not lifecycle.archive_prefixes:
        print(
            "note: no --archive-prefix: only the abort-incomplete-multipart rule was applied",
            file=sys.stderr,
        )
    print(report.summary())
    return 0


def cmd_sagemaker_entry(args: argparse.Namespace) -> int:
    """Run the bundled recipe inside a SageMaker training container."""
    import os
    from pathlib import Path

    from visionforge_aws.entry import run

    return run(Path(args.bundle), os.environ)


def cmd_agent(args: argparse.Namespace) -> int:
    """Train an EC2 run from its S3 prefix (started by systemd on the instance)."""
    from pathlib import Path

    from visionforge_aws.agent import run_agent

    return run_agent(
        args.run,
        Path(args.work),
        log=Path(args.log) if args.log else None,
        upload_every_s=args.upload_every,
        poll_s=args.poll,
    )


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    aws = subparsers.add_parser("aws", help="S3 sync, SageMaker and publishing")
    commands = aws.add_subparsers(dest="aws_command", metavar="COMMAND", required=True)

    p = commands.add_parser("sync", help="sync a folder tree to/from S3 (skips unchanged files)")
    p.add_argument("source", metavar="SRC", help="local folder or s3://bucket/prefix")
    p.add_argument("destination", metavar="DST", help="local folder or s3://bucket/prefix")
    p.add_argument("--concurrency", type=int, default=64, help="transfers at once (default 64)")
    p.add_argument(
        "--processes",
        type=int,
        help="processes the transfers are spread over (default: one per CPU, at most 8, "
        "with at least 256 files each)",
    )
    p.add_argument("--retries", type=int, default=5, help="retries per file (default 5)")
    p.add_argument("--delete", action="store_true", help="delete DST files that SRC lacks")
    p.add_argument("--dry-run", action="store_true", help="list what would change, change nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sync)

    p = commands.add_parser(
        "publish", help="publish a run's artifacts and lineage as a project on S3 (idempotent)"
    )
    p.add_argument(
        "sources",
        metavar="RUN_OR_PATHS",
        nargs="+",
        help="a run folder or run id, and/or artifacts with manifests (checkpoint, ONNX, HEF)",
    )
    p.add_argument("--to", required=True, help="the project prefix, s3://bucket/prefix")
    p.add_argument("--name", required=True, help="model name: models/NAME/VERSION/")
    p.add_argument(
        "--version", default=None, help="default: the run's existing version, else the next number"
    )
    p.add_argument("--all-checkpoints", action="store_true", help="also the per-epoch checkpoints")
    p.add_argument(
        "--model-package-group",
        default=None,
        help="register the version in this SageMaker Model Package Group (created if missing)",
    )
    p.add_argument(
        "--inference-image",
        default=None,
        help="the model package's container (default: the PyTorch inference image)",
    )
    p.add_argument(
        "--lifecycle",
        action="store_true",
        help="merge lifecycle rules into the bucket's (abort incomplete multipart uploads "
        "after 7 days; archive --archive-prefix)",
    )
    p.add_argument(
        "--archive-prefix",
        action="append",
        default=[],
        help="run outputs to archive (s3://bucket/prefix or prefix; repeatable)",
    )
    p.add_argument("--archive-after", type=int, default=30, help="days before archiving (30)")
    p.add_argument(
        "--archive-class", default="GLACIER", help="GLACIER (default), DEEP_ARCHIVE or GLACIER_IR"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_publish)

    p = commands.add_parser(
        "sagemaker-entry", help="(inside SageMaker) run a bundled recipe in the training container"
    )
    p.add_argument("--bundle", default=".", help="the unpacked sourcedir (default: here)")
    p.set_defaults(func=cmd_sagemaker_entry)

    p = commands.add_parser(
        "agent", help="(on EC2) train a run from its S3 prefix, surviving spot interruptions"
    )
    p.add_argument("--run", required=True, help="the run's s3:// prefix")
    p.add_argument("--work", default="/opt/visionforge/work", help="local work folder")
    p.add_argument("--log", default=None, help="log file uploaded to RUN/logs/agent.log")
    p.add_argument("--upload-every", type=float, default=60.0, help="seconds between uploads")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between spot-notice polls")
    p.set_defaults(func=cmd_agent)
