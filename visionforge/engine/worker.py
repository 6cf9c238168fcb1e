"""Per-process entry for multi-process training under torchrun.

``python -m torch.distributed.run --nproc-per-node N -m visionforge.engine.worker
RECIPE.json [--resume [CKPT]] [--exist-ok] [--allow-recipe-change]`` runs the Trainer in
each process; rank 0 prints the result. SIGTERM/SIGINT are caught before the Trainer is built,
so a stop at any moment after that ends in a checkpoint and exit code 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from visionforge.config import load_recipe
from visionforge.engine.signals import StopSignal
from visionforge.errors import VisionforgeError


def main(argv: Sequence[str] | None = None) -> int:
    """Run one training process; exit code 0 also when stopped by SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m visionforge.engine.worker")
    parser.add_argument("recipe", help="recipe file (YAML/JSON, local path or URL)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CKPT",
        help="continue from last.ckpt (if there is one), or from CKPT",
    )
    parser.add_argument("--exist-ok", action="store_true", help="write into a used folder")
    parser.add_argument(
        "--allow-recipe-change", action="store_true", help="resume with another recipe hash"
    )
    args = parser.parse_args(argv)
    with StopSignal(restore=False):
        try:
            from visionforge.engine import Trainer

            trainer = Trainer(
                load_recipe(args.recipe),
                resume=args.resume,
                exist_ok=args.exist_ok,
                allow_recipe_change=args.allow_recipe_change,
            )
            result = trainer.fit()
        except VisionforgeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {
            "metrics": result.metrics,
            "best_metric": result.best_metric,
            "output": result.output,
            "last_checkpoint": result.last_checkpoint,
            "best_checkpoint": result.best_checkpoint,
            "stopped_by_signal": result.stopped_by_signal,
        }
        sys.stdout.write(json.dumps(summary) + "\n")  # one write: ranks share the pipe
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
