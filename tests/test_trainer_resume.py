"""Exact resume: after a crash or SIGKILL at seeded random steps the run ends with the weights
of an uninterrupted run; fsspec outputs resume from their URL. SIGTERM: test_sigterm_under_load."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch
from test_engine_support import (
    SUBPROCESS_ENV,
    plugin_registered,
    single_thread,  # noqa: F401 (autouse fixture)
    tiny_recipe,
    tiny_recipe_data,
)

import visionforge
from visionforge.engine import Trainer, load_checkpoint

SUPPORT = Path(__file__).parent / "test_engine_support.py"

# dropout, augmentation from the global RNG, momentum, EMA, warmup+cosine, mid-epoch saves:
# every piece of state a resume has to restore
RESUME_BLOCKS: dict[str, Any] = {
    "model": {"type": "tiny_net", "dropout": 0.3},
    "optimizer": {"type": "adamw", "lr": 0.01},
    "schedule": {"type": "cosine", "warmup_steps": 3, "min_lr": 1e-4},
    "trainer": {
        "epochs": 3,
        "checkpoint_every_steps": 1,
        "log_every_steps": 1,
        "ema": {"decay": 0.9},
    },
}


class CrashAt:
    """Plugin raising at a given optimizer step (a crash inside the training loop)."""

    def __init__(self, step: int) -> None:
        self.step = step

    @visionforge.hookimpl
    def visionforge_train_step_end(self, trainer: Any, step: int, losses: Any) -> None:
        if step == self.step:
            raise RuntimeError(f"crash at step {step}")


def assert_same_state(a: str, b: str) -> None:
    left, right = load_checkpoint(a), load_checkpoint(b)
    assert left["position"] == right["position"]
    for part in ("model", "ema"):
        for key, value in left[part].items():
            assert torch.equal(value, right[part][key]), f"{part}.{key} differs"
    assert left["metrics"] == right["metrics"]
    assert left["history"] == right["history"]


def test_resume_after_crash_mid_epoch_is_exact(tmp_path: Path) -> None:
    reference = Trainer(tiny_recipe(tmp_path / "ref", **RESUME_BLOCKS)).fit()
    crash = CrashAt(8)  # epoch 2 of 3, step 2 of 6
    with (
        plugin_registered("enginetest-crash", crash),
        pytest.raises(RuntimeError, match="crash at step 8"),
    ):
        Trainer(tiny_recipe(tmp_path / "run", **RESUME_BLOCKS)).fit()
    assert load_checkpoint(str(tmp_path / "run" / "last.ckpt"))["position"]["global_step"] == 7
    failed = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: crash at step 8"
    assert failed["position"] == {"epoch": 1, "step_in_epoch": 2, "global_step": 8}
    assert failed["checkpoints"]["last"] == str(tmp_path / "run" / "last.ckpt")
    csv_lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 2  # written at every epoch end: header + epoch 1
    resumed = Trainer(tiny_recipe(tmp_path / "run", **RESUME_BLOCKS), resume=True).fit()
    assert_same_state(reference.last_checkpoint, resumed.last_checkpoint)
    assert resumed.best_metric == reference.best_metric


def run_subprocess(recipe_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SUPPORT), str(recipe_file), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **SUBPROCESS_ENV},
    )


KILL_STEPS = sorted({1, *random.Random(20261130).sample(range(2, 18), 2)})
"""Steps to SIGKILL at (18 in all): the edge before the first checkpoint, and two drawn with a
fixed seed, so a failure names a step that reproduces."""


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", KILL_STEPS)
def test_sigkill_at_a_random_step_then_resume_equals_uninterrupted(
    tmp_path: Path, kill_at: int
) -> None:
    note = f"killed at step {kill_at}"
    reference = Trainer(tiny_recipe(tmp_path / "ref", **RESUME_BLOCKS)).fit()
    recipe_file = tmp_path / "run.json"
    recipe_file.write_text(json.dumps(tiny_recipe_data(tmp_path / "run", **RESUME_BLOCKS)))
    killed = run_subprocess(recipe_file, "--kill-at", str(kill_at))
    assert killed.returncode == -signal.SIGKILL, note
    last = tmp_path / "run" / "last.ckpt"
    if kill_at == 1:  # killed before the first checkpoint: --resume starts from scratch
        assert not last.exists(), note
    else:  # step kill_at was never saved
        assert load_checkpoint(str(last))["position"]["global_step"] == kill_at - 1, note
    resumed = run_subprocess(recipe_file, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected = "starting from scratch" if kill_at == 1 else f"(global step {kill_at - 1})"
    assert expected in resumed.stdout, note
    assert_same_state(reference.last_checkpoint, str(tmp_path / "run" / "last.ckpt"))


def test_output_to_fsspec_url_and_resume_from_it(tmp_path: Path) -> None:
    url = f"memory://enginetest/{tmp_path.name}/run"
    first = Trainer(tiny_recipe(url, trainer={"epochs": 1, "loggers": ["csv", "tensorboard"]}))
    result = first.fit()
    fs = fsspec.filesystem("memory")
    names = {Path(p).name for p in fs.find(url.removeprefix("memory://"))}
    assert {
        "last.ckpt",
        "last.ckpt.manifest.json",
        "best.ckpt",
        "best.ckpt.manifest.json",
        "metrics.csv",
        "manifest.json",
        "training_curves.png",
    } <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert result.last_checkpoint == f"{url}/last.ckpt"
    manifest = json.loads(fs.cat(f"{url}/last.ckpt.manifest.json"))
    assert manifest["path"] == f"{url}/last.ckpt"
    assert manifest["sha256"] and manifest["size"] == len(fs.cat(f"{url}/last.ckpt"))
    assert not first.run_output.local_dir.exists()  # staging removed

    more = Trainer(tiny_recipe(url, trainer={"epochs": 2}), resume=True)
    assert (more.epoch, more.global_step) == (1, 6)
    more.fit()
    assert load_checkpoint(f"{url}/last.ckpt")["position"]["global_step"] == 12


def test_results_do_not_depend_on_loader_workers(tmp_path: Path) -> None:
    blocks = {**RESUME_BLOCKS, "trainer": {"epochs": 1, "ema": {"decay": 0.9}}}
    inline = Trainer(tiny_recipe(tmp_path / "w0", **blocks)).fit()
    workers = Trainer(
        tiny_recipe(tmp_path / "w2", **blocks, data={"loader": {"num_workers": 2}})
    ).fit()
    assert_same_state(inline.last_checkpoint, workers.last_checkpoint)


def test_epoch_checkpoints_and_resume_from_any_epoch(tmp_path: Path) -> None:
    """keep_epoch_checkpoints writes epoch_NNNN.ckpt; resuming from epoch 1 of 3 ends where
    the uninterrupted run ended."""
    blocks = {"trainer": {"epochs": 3, "keep_epoch_checkpoints": True}}
    straight = Trainer(tiny_recipe(tmp_path / "straight", **blocks)).fit()
    kept = sorted(p.name for p in (tmp_path / "straight").glob("epoch_*.ckpt"))
    assert kept == ["epoch_0001.ckpt", "epoch_0002.ckpt", "epoch_0003.ckpt"]
    first = load_checkpoint(str(tmp_path / "straight" / "epoch_0001.ckpt"))
    assert first["position"] == {"epoch": 1, "step_in_epoch": 0, "global_step": 6}
    assert (tmp_path / "straight" / "epoch_0001.ckpt.manifest.json").exists()

    again = tiny_recipe(tmp_path / "again", **blocks)
    resumed = Trainer(again, resume=str(tmp_path / "straight" / "epoch_0001.ckpt")).fit()
    a = load_checkpoint(straight.last_checkpoint)["model"]
    b = load_checkpoint(resumed.last_checkpoint)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert resumed.metrics == straight.metrics


def test_evaluator_gets_the_dataset_class_names(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path / "run", evaluator={"type": "topk", "k": [1], "per_class": True})
    trainer = Trainer(recipe)
    names = list(trainer.train_set.class_names)
    assert trainer.evaluator.class_names == names
    trainer.fit()
    metrics = visionforge.engine.evaluate(recipe)
    assert {f"acc/{name}" for name in names} <= set(metrics)
