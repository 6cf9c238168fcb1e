"""A detector under DDP (2 gloo processes): evaluation runs on every rank's share and
gathers once (no hang), giving the metrics a single process computes for the same weights;
background-only batches on one rank do not break gradient synchronization. The same for a
tiny DINO (visionforge-dino), whose denoising losses exist on one rank and not the other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from detection_support import TINY_DINO, detection_recipe, register
from test_engine_support import SUBPROCESS_ENV, single_thread  # noqa: F401 (autouse: one thread, as the ranks)

from visionforge.config import recipe_from_dict
from visionforge.engine import evaluate
from visionforge.engine.data import ResumableSampler
from visionforge.registry import REGISTRIES

SUPPORT = Path(__file__).parent / "detection_support.py"
TRAIN = {
    "type": "synthetic_shapes",
    "num_images": 8,
    "shape_size": 40,
    "min_objects": 0,
    "max_objects": 1,
    "seed": 3,
}


def one_rank_sees_only_background(seed: int) -> bool:
    """True if some step gives one rank a background-only image and the other a box."""
    dataset = REGISTRIES.datasets.build(TRAIN)
    empty = [len(dataset[i]["target"]["labels"]) == 0 for i in range(len(dataset))]
    orders = []
    for rank in (0, 1):
        sampler = ResumableSampler(8, 1, seed=seed, rank=rank, world_size=2)
        sampler.set_position(0)
        orders.append([index for _, index in sampler])
    return any(empty[a] != empty[b] for a, b in zip(*orders, strict=True))


def train_on_two_processes(data: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Run ``data`` (a recipe dict) under torchrun with 2 CPU processes; rank 0's summary."""
    recipe_file = tmp_path / "recipe.json"
    recipe_file.write_text(json.dumps(data))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(SUPPORT),
            str(recipe_file),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **SUBPROCESS_ENV},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def assert_single_process_evaluates_alike(data: dict[str, Any], result: dict[str, Any]) -> None:
    """The 2-process run's validation metrics equal one process evaluating its weights."""
    two = {k.removeprefix("val/"): v for k, v in result["metrics"].items() if k.startswith("val/")}
    assert "AP" in two and "F1" in two
    single = evaluate(recipe_from_dict(data), result["last_checkpoint"])
    for key, value in two.items():  # up to float32 rounding: F1_threshold is a model score
        assert single[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def two_process_recipe(output: Path, **blocks: Any) -> dict[str, Any]:
    return detection_recipe(
        str(output),
        data={
            "train": TRAIN,
            "val": {"type": "synthetic_shapes", "num_images": 9, "shape_size": 40, "seed": 1},
        },
        trainer={"batch_size": 1, "seed": 0},
        **blocks,
    )


@pytest.mark.slow
def test_two_processes_evaluate_like_one(tmp_path: Path) -> None:
    register()
    assert one_rank_sees_only_background(seed=0)
    data = two_process_recipe(tmp_path / "two")
    assert_single_process_evaluates_alike(data, train_on_two_processes(data, tmp_path))


@pytest.mark.slow
def test_dino_on_two_processes_evaluates_like_one(tmp_path: Path) -> None:
    """DINO under DDP: on steps where one rank holds only a background image it builds no
    denoising queries while the other does (different loss keys per rank, every parameter
    still in the graph), and the COCO evaluation over both ranks' shares equals a single
    process evaluating the same weights. The training itself is not compared with a single
    process: each rank draws its own denoising noise from its own RNG stream."""
    pytest.importorskip("visionforge_dino")
    register()
    assert one_rank_sees_only_background(seed=0)
    data = two_process_recipe(tmp_path / "two", model=TINY_DINO, loss={"type": "dino"})
    result = train_on_two_processes(data, tmp_path)
    assert "train/loss_bbox_dn" in result["metrics"]  # denoising ran
    assert_single_process_evaluates_alike(data, result)
