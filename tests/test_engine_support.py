"""Tiny components shared by the engine tests (no tests here).

``TinyNet`` is BatchNorm-free (so N processes x batch B equals 1 process x batch N*B), and
``TinyShapes`` draws its augmentation from the global torch RNG, which the trainer seeds per
sample. ``register()`` adds both to the registries under the ``enginetest`` namespace.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import Field
from torch import nn
from torchvision import tv_tensors

import visionforge
from visionforge.config import ComponentConfig, Recipe, recipe_from_dict
from visionforge.engine.signals import StopSignal

NAMESPACE = "enginetest"
SUBPROCESS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Environment for subprocess runs: one intra-op thread (this machine's cores are shared)."""


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread: tiny models run far faster than with threads fighting for
    shared cores. Import into a test module to apply it there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TinyNetConfig(ComponentConfig):
    num_classes: int = 3
    width: int = 8
    dropout: float = Field(0.0, ge=0, lt=1)
    norm: bool = False


class TinyNet(nn.Module):
    """conv -> relu -> pool -> (dropout) -> linear, optionally with a LayerNorm."""

    def __init__(self, cfg: TinyNetConfig) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        layers: list[nn.Module] = [
            nn.Conv2d(3, cfg.width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        ]
        if cfg.norm:
            layers.append(nn.LayerNorm(cfg.width * 16))
        layers += [nn.Dropout(cfg.dropout), nn.Linear(cfg.width * 16, cfg.num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        image = batch["image"] if isinstance(batch, dict) else batch
        return {"logits": self.net(image)}

    def export_module(self) -> nn.Module:
        return self.net


class TinyShapesConfig(ComponentConfig):
    num_samples: int = 48
    num_classes: int = 3
    image_size: int = 16
    augment: bool = True
    uint8: bool = False
    source: str | None = Field(None, description="where the data came from (lineage tests)")


class TinyShapes(torch.utils.data.Dataset[dict[str, Any]]):
    """Class c is a bright square at a class-specific corner; augmentation adds noise."""

    def __init__(self, cfg: TinyShapesConfig) -> None:
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.class_names = [f"class{i}" for i in range(cfg.num_classes)]

    def __len__(self) -> int:
        return self.cfg.num_samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        cfg = self.cfg
        label = index % cfg.num_classes
        gen = torch.Generator().manual_seed(index)
        image = torch.rand(3, cfg.image_size, cfg.image_size, generator=gen) * 0.2
        half = cfg.image_size // 2
        row, col = divmod(label % 4, 2)
        image[label % 3, row * half : (row + 1) * half, col * half : (col + 1) * half] += 0.8
        if cfg.augment:  # global RNG on purpose: the trainer must seed it per sample
            image = image + 0.05 * torch.randn_like(image)
            if torch.rand(()) < 0.5:
                image = image.flip(-1).flip(-2).flip(-1).flip(-2)
        if cfg.uint8:
            image = (image.clamp(0, 1) * 255).to(torch.uint8)
        return {"image": tv_tensors.Image(image), "label": label}


def register() -> None:
    """Register ``tiny_net`` and ``tiny_shapes`` once per process."""
    if f"{NAMESPACE}:tiny_net" in visionforge.models.loaded_names():
        return
    visionforge.models.register(
        "tiny_net", config=TinyNetConfig, builder=TinyNet, namespace=NAMESPACE
    )
    visionforge.datasets.register(
        "tiny_shapes", config=TinyShapesConfig, builder=TinyShapes, namespace=NAMESPACE
    )


BASE: dict[str, Any] = {
    "name": "tiny",
    "model": {"type": "tiny_net"},
    "data": {
        "train": {"type": "tiny_shapes"},
        "val": {"type": "tiny_shapes", "num_samples": 24, "augment": False},
    },
    "loss": {"type": "cross_entropy"},
    "evaluator": {"type": "topk", "k": [1, 2]},
    "optimizer": {"type": "sgd", "lr": 0.2, "momentum": 0.9},
    "trainer": {
        "epochs": 2,
        "batch_size": 8,
        "device": "cpu",
        "loggers": ["csv"],
        "log_every_steps": 2,
    },
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` into a copy of ``base``; a block naming another ``type``
    replaces the block instead."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        old = out.get(key)
        if (
            isinstance(value, dict)
            and isinstance(old, dict)
            and value.get("type", old.get("type")) == old.get("type")
        ):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def tiny_recipe_data(output: str | Path, **blocks: Any) -> dict[str, Any]:
    """The tiny recipe as a dict with ``trainer.output`` set and ``blocks`` merged in."""
    return merge(BASE, {**blocks, "trainer": {**blocks.get("trainer", {}), "output": str(output)}})


def tiny_recipe(output: str | Path, **blocks: Any) -> Recipe:
    """The tiny recipe (components registered) writing to ``output``."""
    register()
    return recipe_from_dict(tiny_recipe_data(output, **blocks))


class SignalAt:
    """Plugin sending this process ``signum`` right after optimizer step ``step`` (SIGINT: a
    preemption the trainer checkpoints; SIGKILL: a death nothing can handle)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step = step
        self.signum = signum

    @visionforge.hookimpl
    def visionforge_train_step_end(self, trainer: Any, step: int, losses: Any) -> None:
        if step == self.step:
            os.kill(os.getpid(), self.signum)


class HoldUntilStopped:
    """Plugin that, right after optimizer step ``step``, waits until this process has a stop
    signal (at most ``timeout_s``): the run is still in progress when the signal comes, however
    fast the machine, so a stop mid-run is certain rather than a race with its end."""

    def __init__(self, step: int, timeout_s: float = 300.0) -> None:
        self.step = step
        self.timeout_s = timeout_s

    @visionforge.hookimpl
    def visionforge_train_step_end(self, trainer: Any, step: int, losses: Any) -> None:
        if step != self.step:
            return
        deadline = time.monotonic() + self.timeout_s
        with StopSignal() as stop:  # nested: shares the trainer's flag
            while not stop.requested:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no stop signal {self.timeout_s} s after step {step}")
                time.sleep(0.05)


@contextlib.contextmanager
def plugin_registered(name: str, plugin: object) -> Iterator[None]:
    """``plugin`` registered under ``name`` for the block, unregistered after it."""
    visionforge.plugins.register_plugin(name, plugin)
    try:
        yield
    finally:
        visionforge.LOADER.pm.unregister(plugin)
        visionforge.LOADER.infos.pop(name, None)


class StepReporter:
    """Plugin printing ``step N`` after every optimizer step and ``rank R stopped at step S``
    at the end, flushed: a test follows the run on stdout instead of polling files.

    Each line is one ``write`` (``print`` writes the text and its newline separately): DDP
    ranks share the pipe, and two ranks' separate writes interleaved into ``step 8step 8``."""

    @staticmethod
    def _say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    @visionforge.hookimpl
    def visionforge_train_step_end(self, trainer: Any, step: int, losses: Any) -> None:
        self._say(f"step {step}")

    @visionforge.hookimpl
    def visionforge_train_end(self, trainer: Any, metrics: Any) -> None:
        self._say(f"rank {trainer.dist.rank} stopped at step {trainer.global_step}")


def _main() -> int:
    """Script mode for subprocess tests: ``python test_engine_support.py RECIPE.json
    [--resume] [--kill-at STEP] [--report-steps]`` (also runs under torchrun, one process per
    rank). Stop signals are caught from the start; ``listening`` is printed once they are."""
    import argparse
    import signal

    from visionforge.engine import worker
    from visionforge.engine.signals import StopSignal

    parser = argparse.ArgumentParser()
    parser.add_argument("recipe")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-at", type=int, default=None, help="SIGKILL self after this step")
    parser.add_argument("--report-steps", action="store_true", help="print steps (StepReporter)")
    args = parser.parse_args()
    with StopSignal(restore=False):  # shared with the worker's and the trainer's
        print("listening", flush=True)
        register()
        if args.report_steps:
            visionforge.plugins.register_plugin("enginetest-steps", StepReporter())
        if args.kill_at is not None:
            killer = SignalAt(args.kill_at, signal.SIGKILL)
            visionforge.plugins.register_plugin("enginetest-killer", killer)
        return worker.main([args.recipe, *(["--resume"] if args.resume else [])])


if __name__ == "__main__":
    raise SystemExit(_main())
