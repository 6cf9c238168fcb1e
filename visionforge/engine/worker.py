"""Per-process entry for multi-process training under torchrun.

``python -m torch.distributed.run --nproc-per-node N -m visionforge.engine.worker
RECIPE.json [--resume [CKPT]]`` runs the Trainer in each process; rank 0 prints the result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from visionforge.config import load_recipe
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
        help="continue from last.ckpt, or from CKPT",
    )
    args = parser.parse_args(argv)
    try:
        from visionforge.engine import Trainer

        result = Trainer(load_recipe(args.recipe), resume=args.resume).fit()
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
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
