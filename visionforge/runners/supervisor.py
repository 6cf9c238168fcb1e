"""The supervisor of a detached local run (``visionforge train --detach``).

``python -m visionforge.runners.supervisor RUN_ID [--resume [CKPT]] [--exist-ok]
[--allow-recipe-change]`` reads the run's record, starts torchrun on the recipe stored beside
it, passes SIGTERM/SIGINT on as a stop request (the trainer checkpoints and ends) and writes
the final status, metrics and error into the record. It runs in its own session, so it
outlives the command that started it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from visionforge.components.configs import LocalRunnerConfig
from visionforge.config import load_recipe
from visionforge.runners import records
from visionforge.runners.local import TorchrunRun, TrainOptions


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visionforge.runners.supervisor")
    parser.add_argument("run_id")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT")
    parser.add_argument("--exist-ok", action="store_true")
    parser.add_argument("--allow-recipe-change", action="store_true")
    args = parser.parse_args(argv)
    record = records.load(args.run_id)
    record.update(pid=os.getpid())
    try:
        recipe = load_recipe(str(record.state["recipe_file"]))
        cfg = LocalRunnerConfig.model_validate(
            {k: v for k, v in record.runner.items() if k != "type"}
        )
        options = TrainOptions(exist_ok=args.exist_ok, allow_recipe_change=args.allow_recipe_change)
        run = TorchrunRun(recipe, args.resume, cfg, False, options, record)
    except Exception as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    status = run.wait()  # forwards SIGTERM/SIGINT to torchrun as a stop request
    return 0 if status in ("completed", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
