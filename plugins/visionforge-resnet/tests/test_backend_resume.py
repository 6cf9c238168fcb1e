"""The Trainer on the DALI backend: checkpoints record it, a run stopped mid-epoch resumes to
the same weights, and resuming on another backend says so."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
import torch
from test_engine_support import SignalAt, plugin_registered

from visionforge.config import Recipe, load_recipe
from visionforge.engine import Trainer, load_checkpoint
from visionforge_resnet.tinydata import TinyImageNet, make_tiny_imagenet

pytest.importorskip("nvidia.dali")

EXAMPLE = Path(__file__).parents[3] / "examples" / "resnet50_imagenet" / "recipe.yaml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyImageNet:
    return make_tiny_imagenet(
        tmp_path_factory.mktemp("tiny"),
        num_classes=2,
        train_per_class=8,
        val_per_class=2,
        image_size=40,
    )


def recipe(tiny: TinyImageNet, out: Path, backend: str) -> Recipe:
    """ResNet-18 at 32 px, 16 images, 4 steps of 4: one epoch, the example's other settings."""
    return load_recipe(
        EXAMPLE,
        [
            "model.depth=18",
            "model.num_classes=2",
            f"data.train.root={tiny.train}",
            f"data.val.root={tiny.val}",
            "data.train.image_size=32",
            "data.val.image_size=32",
            "data.loader.num_workers=1",
            "data.loader.persistent_workers=false",
            f"data.loader.backend={backend}",
            "data.mixup.num_classes=2",
            "trainer.batch_size=4",
            "trainer.epochs=1",
            "trainer.precision=fp32",
            "trainer.channels_last=false",
            "trainer.device=cpu",
            f"trainer.output={out}",
            "trainer.loggers=[csv]",
            "schedule.warmup_epochs=0.5",
        ],
    )


@pytest.mark.slow
def test_dali_run_stopped_mid_epoch_resumes_exactly(
    tiny: TinyImageNet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    straight = Trainer(recipe(tiny, tmp_path / "straight", "dali")).fit()
    with plugin_registered("resnet-backend-stop", SignalAt(2, signal.SIGINT)):  # a preemption
        first = Trainer(recipe(tiny, tmp_path / "resumed", "dali")).fit()
    assert first.stopped_by_signal
    stopped = load_checkpoint(first.last_checkpoint)
    assert stopped["data_backend"] == "dali-cpu"
    assert stopped["position"]["step_in_epoch"] == 2
    shutil.copytree(tmp_path / "resumed", tmp_path / "on_torch")

    capsys.readouterr()
    resumed = Trainer(recipe(tiny, tmp_path / "resumed", "dali"), resume=True).fit()
    assert "data backend" not in capsys.readouterr().out
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert a["data_backend"] == b["data_backend"] == "dali-cpu"
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["metrics"]["train/loss"] == b["metrics"]["train/loss"]

    Trainer(recipe(tiny, tmp_path / "on_torch", "torch"), resume=True).fit()
    out = capsys.readouterr().out
    assert "trained with the dali-cpu data backend, now torch" in out
    assert load_checkpoint(str(tmp_path / "on_torch" / "last.ckpt"))["data_backend"] == "torch"
