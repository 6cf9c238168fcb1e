"""PNG figures (matplotlib, Agg): PR curves, error analysis, dataset statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from visionforge_coco.analysis import ErrorAnalysis
from visionforge_coco.evaluation import CocoEvalResult

MAX_CLASS_CURVES = 20
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def _mean_curve(precision: np.ndarray) -> np.ndarray:
    """Mean over classes of [101, K] precision, ignoring classes without ground truth (-1)."""
    valid = precision > -1
    total = np.where(valid, precision, 0.0).sum(axis=1)
    count = valid.sum(axis=1)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def plot_pr_curves(result: CocoEvalResult, path: str | Path) -> str:
    """Mean PR curves at IoU 0.5 / 0.75 / 0.5:0.95 and per-class curves at IoU 0.5."""
    p = result.precision[:, :, :, 0, -1]  # [T, R, K], area all, 100 detections
    fig, (ax_mean, ax_cls) = plt.subplots(1, 2, figsize=(12, 5))
    ious = result.iou_thresholds
    for label, t in (("IoU 0.50", 0), ("IoU 0.75", int(np.argmin(np.abs(ious - 0.75))))):
        ax_mean.plot(RECALL_POINTS, _mean_curve(p[t]), label=label)
    ax_mean.plot(
        RECALL_POINTS,
        np.mean([_mean_curve(p[t]) for t in range(len(ious))], axis=0),
        label="IoU 0.50:0.95",
    )
    ax_mean.set(
        title="mean precision-recall",
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax_mean.legend()
    order = sorted(
        range(len(result.category_names)),
        key=lambda k: -result.per_class_ap[result.category_names[k]],
    )
    for k in order[:MAX_CLASS_CURVES]:
        curve = p[0, :, k]
        if (curve > -1).any():
            ax_cls.plot(
                RECALL_POINTS, np.clip(curve, 0, None), lw=1, label=result.category_names[k]
            )
    shown = min(len(order), MAX_CLASS_CURVES)
    ax_cls.set(
        title=f"per class at IoU 0.50 (top {shown} by AP)",
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax_cls.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_errors(analysis: ErrorAnalysis, path: str | Path) -> str:
    """Bar charts of false positives by type and false negatives by object size."""
    fig, (ax_fp, ax_fn) = plt.subplots(1, 2, figsize=(10, 4))
    ax_fp.bar(
        list(analysis.false_positives), list(analysis.false_positives.values()), color="tab:red"
    )
    ax_fp.set(title=f"false positives (score >= {analysis.threshold:.3f})", ylabel="count")
    ax_fp.tick_params(axis="x", labelrotation=20)
    ax_fn.bar(
        list(analysis.false_negatives), list(analysis.false_negatives.values()), color="tab:blue"
    )
    ax_fn.set(title="false negatives by object size", ylabel="count")
    return _save(fig, path)


def plot_stats(
    class_counts: Mapping[str, int],
    boxes_per_image: Sequence[int],
    box_sides: Sequence[float],
    path: str | Path,
) -> str:
    """Class counts, boxes-per-image histogram and box size (sqrt area) histogram."""
    fig, (ax_cls, ax_per, ax_size) = plt.subplots(1, 3, figsize=(15, 4))
    ax_cls.bar(list(class_counts), list(class_counts.values()))
    ax_cls.set(title="annotations per class", ylabel="count")
    ax_cls.tick_params(axis="x", labelrotation=45, labelsize=7)
    per = np.asarray(boxes_per_image)
    ax_per.hist(per, bins=np.arange(0, (per.max() if per.size else 0) + 2) - 0.5)
    ax_per.set(title="boxes per image", xlabel="boxes", ylabel="images")
    ax_size.hist(np.asarray(box_sides), bins=50)
    for edge in (32, 96):
        ax_size.axvline(edge, color="k", ls="--", lw=1)
    ax_size.set(
        title="box size (sqrt area, px; COCO small|medium|large)", xlabel="px", ylabel="boxes"
    )
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> str:
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
