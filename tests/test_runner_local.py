"""The local runner: in-process with nproc 1, torchrun with nproc 2."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from visionforge import REGISTRIES
from visionforge.config import Recipe, recipe_from_dict
from visionforge.engine.distributed import BACKEND_ENV
from visionforge.errors import StorageError
from visionforge.runners import RunFailedError, local
from visionforge.runners.local import InProcessRun, LocalRunner, TorchrunRun

SYNTHETIC = {"type": "synthetic_classification", "num_samples": 16, "image_size": 16}


def tiny_recipe(
    output: Path,
    nproc: int = 1,
    train: dict[str, Any] = SYNTHETIC,
    backend: str = "auto",
    **trainer: Any,
) -> Recipe:
    """A ~100k-parameter timm net on 16 generated 16x16 images, one epoch."""
    return recipe_from_dict(
        {
            "name": "tiny",
            "model": {"type": "timm", "name": "test_efficientnet", "num_classes": 4},
            "data": {
                "train": train,
                "val": {"type": "synthetic_classification", "num_samples": 8, "image_size": 16},
            },
            "optimizer": {"type": "sgd", "lr": 0.05},
            "trainer": {
                "epochs": 1,
                "batch_size": 4,
                "device": "cpu",
                "output": str(output),
                **{"loggers": ["csv"], **trainer},
            },
            "evaluator": {"type": "topk", "k": [1]},
            "runner": {"type": "local", "nproc": nproc, "backend": backend},
        }
    )


def runner_for(recipe: Recipe) -> LocalRunner:
    runner = REGISTRIES.runners.build(recipe.runner.as_dict(), "runner")
    assert isinstance(runner, LocalRunner)
    runner.echo = False
    return runner


@pytest.mark.slow
def test_in_process_run(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path / "run", loggers=["console", "csv"])
    handle = runner_for(recipe).submit(recipe)
    assert isinstance(handle, InProcessRun)
    assert handle.wait() == "completed" and handle.status() == "completed"
    assert handle.error() is None and handle.train_result is not None
    assert set(handle.result() or {}) >= {"train/loss", "val/top1"}
    names = {Path(p).name for p in handle.artifacts()}
    assert {"last.ckpt", "best.ckpt", "metrics.csv", "manifest.json"} <= names
    assert "epoch 1/1" in handle.logs()


def test_in_process_failure_is_kept(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    recipe = tiny_recipe(tmp_path / "run", train={"type": "image_folder", "root": str(missing)})
    handle = runner_for(recipe).submit(recipe)
    assert handle.status() == "failed" and handle.wait() == "failed"
    assert handle.result() is None
    assert isinstance(handle.error(), StorageError)
    assert str(missing) in str(handle.error())


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path / "run", nproc=2)
    handle = runner_for(recipe).submit(recipe)
    assert isinstance(handle, TorchrunRun)
    assert handle.status() in {"running", "completed"}
    assert handle.wait(timeout=300) == "completed", handle.logs()[-3000:]
    assert handle.error() is None
    assert "val/top1" in (handle.result() or {})
    names = {Path(p).name for p in handle.artifacts()}
    assert {"last.ckpt", "metrics.csv", "torchrun.log", "torchrun-recipe.json"} <= names
    assert (tmp_path / "run" / "torchrun.log").read_text() == handle.logs()


def fake_launcher(monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """Replace torchrun by a small script (it gets the worker arguments in sys.argv)."""
    monkeypatch.setattr(local, "LAUNCHER", ("-c", script))


def test_failed_launch_names_the_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_launcher(
        monkeypatch,
        f"import os, sys; print('starting', sys.argv[1:], os.environ[{BACKEND_ENV!r}]); "
        "print('[rank1]: visionforge.errors.ConfigError: data.train: too few samples'); "
        "print('ChildFailedError:'); sys.exit(3)",
    )
    recipe = tiny_recipe(tmp_path / "run", nproc=2, backend="gloo")
    handle = runner_for(recipe).submit(recipe, resume=True)
    assert handle.wait(timeout=60) == "failed" and handle.status() == "failed"
    assert isinstance(handle, TorchrunRun) and isinstance(handle.error(), RunFailedError)
    log = tmp_path / "run" / "torchrun.log"
    assert str(handle.error()) == (
        "torchrun exited with code 3 ([rank1]: visionforge.errors.ConfigError: data.train: "
        f"too few samples); full log: {log}"
    )
    assert "'--nproc-per-node', '2', '-m', 'visionforge.engine.worker'" in log.read_text()
    assert log.read_text().startswith("starting") and "] gloo\n" in log.read_text()
    assert log.read_text().count("--resume") == 1
    stored = json.loads((tmp_path / "run" / "torchrun-recipe.json").read_text())
    assert stored == recipe.model_dump(mode="json")


def test_stop_reports_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = {
        "metrics": {"train/loss": 1.0},
        "best_metric": None,
        "output": str(tmp_path / "run"),
        "last_checkpoint": str(tmp_path / "run" / "last.ckpt"),
        "best_checkpoint": None,
        "stopped_by_signal": True,
    }
    fake_launcher(
        monkeypatch,
        "import json, signal, sys, time\n"
        "def stop(*_):\n"
        f"    print({json.dumps(summary)!r}, flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n",
    )
    recipe = tiny_recipe(tmp_path / "run", nproc=2)
    handle = runner_for(recipe).submit(recipe)
    assert isinstance(handle, TorchrunRun)
    assert handle.wait(timeout=0.05) == "running" and handle.status() == "running"
    deadline = time.monotonic() + 30
    while "ready" not in handle.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    handle.stop()
    assert handle.wait(timeout=30) == "stopped"
    assert handle.error() is None and handle.train_result is not None
    assert handle.train_result.stopped_by_signal and handle.result() == {"train/loss": 1.0}


@pytest.mark.parametrize(
    ("log", "cause"),
    [
        ("step 1\nerror: data.train.root: not found\n====\n", "error: data.train.root: not found"),
        (
            "[rank0]: Traceback (most recent call last):\n[rank0]:   File 'x.py'\n"
            "[rank0]: RuntimeError: CUDA out of memory\n"
            "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n====\n",
            "[rank0]: RuntimeError: CUDA out of memory",
        ),
        ("all fine\n====\n", ""),
    ],
)
def test_cause_of_a_failed_run(log: str, cause: str) -> None:
    assert local._last_error_line(log) == cause
