"""``visionforge runs list | status ID | logs ID [--follow] | stop ID | artifacts ID``.

Every command reaches the run through its record and the runner named there
(:func:`visionforge.runners.records.attach`), so local, SageMaker and EC2 runs answer alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone

from visionforge.runners import records

FOLLOW_POLL_S = 2.0
FINAL = ("completed", "failed", "stopped")


def cmd_runs_list(args: argparse.Namespace) -> int:
    """Recorded runs, newest first, with the status they last recorded."""
    from visionforge.cli import format_table

    rows = [
        [
            r.id,
            str(r.runner.get("type", "?")),
            r.recipe,
            str(r.state.get("status", "?")),
            datetime.fromtimestamp(r.created, timezone.utc).strftime("%Y-%m-%d %H:%M"),
            r.output,
        ]
        for r in records.all_records()[: args.limit]
    ]
    if not rows:
        print(f"no runs recorded in {records.runs_folder()}")
        return 0
    print(format_table(rows, ["id", "runner", "recipe", "status", "created (UTC)", "output"]))
    return 0


def cmd_runs_status(args: argparse.Namespace) -> int:
    """The run's current status (asked from where it runs), its metrics or its error."""
    from visionforge.cli import format_metrics

    handle = records.attach(args.run_id)
    status = handle.status()
    print(status)
    metrics = handle.result()
    if metrics:
        print(format_metrics(metrics))
    error = handle.error()
    if error is not None:
        print(f"error: {error}")
    return 0


def cmd_runs_logs(args: argparse.Namespace) -> int:
    """Print the run's log; ``--follow`` keeps printing until the run ends."""
    handle = records.attach(args.run_id)
    shown = 0
    while True:
        status = handle.status()
        text = handle.logs()
        sys.stdout.write(text[shown:])
        sys.stdout.flush()
        shown = max(shown, len(text))
        if not args.follow or status in FINAL:
            return 0
        time.sleep(FOLLOW_POLL_S)


def cmd_runs_stop(args: argparse.Namespace) -> int:
    """Ask the run to checkpoint and stop."""
    handle = records.attach(args.run_id)
    status = handle.status()
    if status in FINAL:
        print(f"{args.run_id}: already {status}")
        return 0
    handle.stop()
    print(f"{args.run_id}: stop requested (it checkpoints, then ends as 'stopped')")
    return 0


def cmd_runs_artifacts(args: argparse.Namespace) -> int:
    """The run's files (local paths or URLs)."""
    for path in records.attach(args.run_id).artifacts():
        print(path)
    return 0


def add_runs_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``runs`` and its subcommands to the ``visionforge`` parser."""
    runs = sub.add_parser("runs", help="list runs and reach one by id (any runner)")
    commands = runs.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)
    p = commands.add_parser("list", help="recorded runs, newest first")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default: 50)")
    p.set_defaults(func=cmd_runs_list)
    for name, func, text in (
        ("status", cmd_runs_status, "a run's status, metrics or error"),
        ("logs", cmd_runs_logs, "a run's log"),
        ("stop", cmd_runs_stop, "ask a run to checkpoint and stop"),
        ("artifacts", cmd_runs_artifacts, "a run's files"),
    ):
        p = commands.add_parser(name, help=text)
        p.add_argument("run_id", metavar="ID", help="run id (see: visionforge runs list)")
        if name == "logs":
            p.add_argument("--follow", "-f", action="store_true", help="until the run ends")
        p.set_defaults(func=func)
