"""training_curves.png stays readable when a run logs dozens of figures per epoch (a detector:
per-class AP, COCO's size breakdown, every loss term of every decoder layer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from visionforge.engine.loggers import MAX_CURVES, headline_keys, plot_curves


def _epoch(epoch: int, **metrics: float) -> dict[str, Any]:
    return {"kind": "epoch", "epoch": epoch, "step": 10 * epoch, **metrics}


def test_headline_keys_leave_out_per_class_absent_and_repeated_series() -> None:
    epochs = [
        _epoch(1, **{"train/loss": 3.0, "train/loss_ce": 1.0, "val/AP": 0.1, "val/APs": 0.1}),
        _epoch(
            2,
            **{"train/loss": 2.0, "train/loss_ce": 0.5, "val/AP": 0.3, "val/APs": 0.3},
            **{"val/APm": -1.0, "val/AP/cat": 0.2, "val/AR": 0.4},
        ),
    ]
    assert headline_keys(epochs, "val/") == ["val/AP", "val/AR"]  # APs repeats AP
    assert headline_keys(epochs, "train/") == ["train/loss_ce"]


def test_past_the_limit_the_shortest_names_stay_in_logged_order() -> None:
    terms = {f"train/loss_{name}": 1.0 + i for i, name in enumerate(
        ["giou_dn_0", "ce", "bbox", "ce_dn_0", "giou", "bbox_dn_0", "ce_0", "bbox_0",
         "giou_0", "ce_interm", "bbox_interm", "giou_interm", "ce_dn", "bbox_dn", "giou_dn"]
    )}  # fmt: skip
    kept = headline_keys([_epoch(1, **terms)], "train/")
    assert len(kept) == MAX_CURVES
    assert {"train/loss_ce", "train/loss_bbox", "train/loss_giou"} <= set(kept)
    assert "train/loss_giou_interm" not in kept
    assert kept == [k for k in terms if k in kept]


def test_a_detector_history_plots_every_panel(tmp_path: Path) -> None:
    history: list[dict[str, Any]] = []
    for epoch in range(1, 5):
        step = {"kind": "step", "step": 10 * epoch, "train/loss": 5.0 / epoch, "lr": 1e-3}
        metrics = {f"train/loss_term_{i}": 1.0 / (epoch + i) for i in range(15)}
        metrics |= {f"val/AP/class_{i}": 0.1 * epoch for i in range(20)}
        metrics |= {"val/AP": 0.1 * epoch, "val/APl": -1.0, "train/loss": 5.0 / epoch}
        history += [step, _epoch(epoch, **metrics)]
    path = plot_curves(history, tmp_path / "curves.png", title="detector")
    with Image.open(path) as image:
        width, height = image.size
    assert width >= 4 * 400 and height < 2 * 400  # four panels side by side, legends below
