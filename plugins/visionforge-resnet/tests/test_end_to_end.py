"""The ResNet recipe end to end on a generated tiny ImageNet: CLI and Python, mixup, resume.

ResNet-18 at 32 px, 4 classes, 64 training images (4 steps of 16 per epoch), fp32 on CPU
(bf16 autocast is the recipe's GPU setting and is emulated, slowly, on most CPUs).
"""

from __future__ import annotations

import csv
import math
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from test_engine_support import SignalAt, plugin_registered

from visionforge.cli import main
from visionforge.config import Recipe, load_recipe
from visionforge.engine import Trainer, load_checkpoint
from visionforge_resnet.tinydata import TinyImageNet, make_tiny_imagenet

EXAMPLE = Path(__file__).parents[3] / "examples" / "resnet50_imagenet" / "recipe.yaml"
CLASSES = 4
BATCH = 16
STEPS_PER_EPOCH = 4


def tiny_overrides(train: Path, val: Path, out: Path, epochs: int) -> list[str]:
    """Scale the ImageNet recipe down to the tiny dataset; every other setting stays."""
    return [
        "model.depth=18",
        f"model.num_classes={CLASSES}",
        f"data.train.root={train}",
        f"data.val.root={val}",
        "data.train.image_size=32",
        "data.val.image_size=32",
        "data.loader.num_workers=0",
        "data.loader.persistent_workers=false",
        f"data.mixup.num_classes={CLASSES}",
        f"trainer.batch_size={BATCH}",
        f"trainer.epochs={epochs}",
        "trainer.precision=fp32",
        f"trainer.output={out}",
        "trainer.loggers=[csv]",
        "schedule.warmup_epochs=1",
    ]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyImageNet:
    return make_tiny_imagenet(
        tmp_path_factory.mktemp("tiny"),
        num_classes=CLASSES,
        train_per_class=BATCH,
        val_per_class=4,
        image_size=40,
    )


def tiny_recipe(tiny: TinyImageNet, out: Path) -> Recipe:
    """One epoch of 4 steps: 2 of warmup, 2 of cosine."""
    sets = tiny_overrides(tiny.train, tiny.val, out, epochs=1)
    return load_recipe(EXAMPLE, [*sets, "schedule.warmup_epochs=0.5"])


@pytest.mark.slow
def test_cli_prepare_train_eval_predict_curve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert (
        main(
            [
                "resnet",
                "make-tiny",
                str(data),
                "--classes",
                str(CLASSES),
                "--flat-val",
                "--train-per-class",
                str(BATCH),
                "--val-per-class",
                "4",
                "--image-size",
                "40",
            ]
        )
        == 0
    )
    assert not (data / "val").exists()
    assert (
        main(
            [
                "resnet",
                "prepare",
                str(data / "val_flat"),
                "--out",
                str(data / "val"),
                "--devkit",
                str(data / "ILSVRC2012_devkit_t12"),
                "--quiet",
            ]
        )
        == 0
    )
    assert "16 images in 4 class folders" in capsys.readouterr().out

    out = tmp_path / "run"
    sets = tiny_overrides(data / "train", data / "val", out, epochs=2)
    sets += ["trainer.log_every_steps=1", "trainer.csv_log_steps=true"]
    assert main(["train", str(EXAMPLE), *[a for s in sets for a in ("--set", s)]]) == 0

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [int(r["epoch"]) for r in epochs] == [1, 2]
    for key in ("train/top1", "val/top1"):
        assert all(0.0 <= float(r[key]) <= 1.0 for r in epochs), key
    assert "val/top5" not in epochs[0]  # top-5 of 4 classes is always 1: not reported
    assert float(epochs[-1]["val/top1"]) >= 0.75  # chance is 0.25

    # the lr the trainer logged after step s is the recipe's arithmetic at step s
    peak, start, floor = 0.1 * BATCH / 256, 1e-5, 1e-5
    warmup, decay = STEPS_PER_EPOCH, STEPS_PER_EPOCH
    for row in (r for r in rows if r["kind"] == "step"):
        step = int(row["step"])
        if step < warmup:
            expected = start + (peak - start) * step / warmup
        else:
            expected = floor + 0.5 * (peak - floor) * (
                1 + math.cos(math.pi * (step - warmup) / decay)
            )
        assert float(row["lr"]) == pytest.approx(expected, rel=1e-6), step

    capsys.readouterr()
    report = tmp_path / "report"
    assert main(["eval", str(out / "best.ckpt"), "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "top1" in printed and "mean_class_acc" in printed
    assert list(report.glob("*.png")), "confusion matrix PNG"

    image = next((data / "val").glob("*/*.JPEG"))
    assert main(["predict", str(out / "best.ckpt"), str(image)]) == 0
    printed = capsys.readouterr().out
    assert image.parent.name in printed  # the true class is among the listed classes

    assert main(["resnet", "curve", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "76.77%" in printed and "latest: epoch 2" in printed  # epochs count from 1
    assert (out / "reference_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_mixup_cutmix_targets_have_the_right_shape_and_mass(
    tiny: TinyImageNet, tmp_path: Path
) -> None:
    trainer = Trainer(tiny_recipe(tiny, tmp_path / "run"))
    assert trainer.mixup is not None
    smoothing = 0.1
    off = smoothing / CLASSES
    torch.manual_seed(0)
    kinds = set()
    for _ in range(12):
        images = torch.rand(BATCH, 3, 32, 32)
        labels = torch.randint(0, CLASSES, (BATCH,))
        mixed, target = trainer.mixup(images.clone(), labels.clone())
        assert target.shape == (BATCH, CLASSES) and target.dtype.is_floating_point
        assert torch.allclose(target.sum(dim=1), torch.ones(BATCH))
        partner = labels.flip(0)
        # every class other than the two mixed ones keeps exactly the smoothing floor
        for i in range(BATCH):
            others = [c for c in range(CLASSES) if c not in (labels[i], partner[i])]
            assert torch.allclose(target[i, others], torch.full((len(others),), off))
        # lam is what the image mix says: blend weight (mixup) or pasted area (cutmix)
        distinct = labels != partner
        if not distinct.any():
            continue
        i = int(distinct.nonzero()[0])
        lam = float((target[i, labels[i]] - off) / (1 - smoothing))
        from_self = (mixed[i] == images[i]).all(dim=0).float().mean().item()
        if from_self < 1 and torch.allclose(mixed, lam * images + (1 - lam) * images.flip(0)):
            kinds.add("mixup")
        else:
            assert from_self == pytest.approx(lam, abs=1e-6)
            kinds.add("cutmix")
    assert kinds == {"mixup", "cutmix"}
    losses = trainer.loss_fn({"logits": torch.zeros(BATCH, CLASSES)}, {"label": target})
    assert losses["loss"].item() == pytest.approx(math.log(CLASSES), rel=1e-5)


@pytest.fixture(scope="module")
def straight_and_resumed(
    tiny: TinyImageNet, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Last checkpoints of one epoch run straight through, and stopped at step 2 + resumed."""
    tmp_path = tmp_path_factory.mktemp("resume")
    straight = Trainer(tiny_recipe(tiny, tmp_path / "straight")).fit()
    assert not straight.stopped_by_signal
    with plugin_registered("resnet-test-stop", SignalAt(2, signal.SIGINT)):  # a preemption
        first = Trainer(tiny_recipe(tiny, tmp_path / "resumed")).fit()
    assert first.stopped_by_signal
    position = load_checkpoint(first.last_checkpoint)["position"]
    assert position == {"epoch": 0, "step_in_epoch": 2, "global_step": 2}
    resumed = Trainer(tiny_recipe(tiny, tmp_path / "resumed"), resume=True).fit()
    assert not resumed.stopped_by_signal
    return load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)


@pytest.mark.slow
def test_python_resume_mid_epoch_continues_exactly(
    straight_and_resumed: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    a, b = straight_and_resumed
    assert a["position"] == b["position"] == {"epoch": 1, "step_in_epoch": 0, "global_step": 4}
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for name, state in a["optimizer"]["state"].items():
        assert torch.equal(
            state["momentum_buffer"], b["optimizer"]["state"][name]["momentum_buffer"]
        )
    # 4 classes: top-5 is always 1.0 and not reported
    for key in ("train/loss", "lr", "val/top1", "val/mean_class_acc"):
        assert a["metrics"][key] == b["metrics"][key], key


@pytest.mark.slow
def test_resume_mid_epoch_keeps_train_accuracy(
    straight_and_resumed: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    a, b = straight_and_resumed
    assert a["metrics"]["train/top1"] == b["metrics"]["train/top1"]
