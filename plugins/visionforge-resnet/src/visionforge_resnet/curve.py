"""Is a run on track? Its val top-1 per epoch beside the reference ResNet50 run's.

Epochs are counted from 1, as in the trainer's logs and ``metrics.csv`` (``epoch 1`` = after
the first epoch). A run folder is read from ``metrics.csv``
when it is current, else from the history stored in ``last.ckpt`` (written every epoch,
so a run in progress can be checked too).
"""

from __future__ import annotations

import csv
import io
import math
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from visionforge import lineage, storage
from visionforge.errors import StorageError
from visionforge.run_folder import LAST
from visionforge_resnet.presets import REFERENCE_VAL_TOP1

METRIC = "val/top1"


@dataclass(frozen=True)
class CurveReport:
    """A run's val top-1 by epoch (1-based, fractions) and where its plot was written."""

    source: str
    val_top1: dict[int, float]
    png: str

    def rows(self) -> list[tuple[int, float, float | None]]:
        """(epoch, reference top-1, this run's top-1 or None if not reached)."""
        return [(e, ref, self.val_top1.get(e)) for e, ref in sorted(REFERENCE_VAL_TOP1.items())]

    def table(self) -> str:
        """The reference epochs with this run's accuracy and the difference, in percent."""
        lines = [f"{'epoch':>5} {'reference':>10} {'this run':>9} {'diff':>8}"]
        for epoch, reference, ours in self.rows():
            shown = f"{ours:9.2%}" if ours is not None else f"{'-':>9}"
            diff = f"{ours - reference:+8.2%}" if ours is not None else f"{'-':>8}"
            lines.append(f"{epoch:>5} {reference:10.2%} {shown} {diff}")
        last = max(self.val_top1)
        lines.append(f"latest: epoch {last}, {self.val_top1[last]:.2%} val top-1 ({self.source})")
        return "\n".join(lines)


def val_top1_by_epoch(rows: Iterable[Mapping[str, Any]], source: str) -> dict[int, float]:
    """``{epoch: val/top1}`` from trainer history rows (epochs counted from 1)."""
    values: dict[int, float] = {}
    for row in rows:
        if row.get("kind", "epoch") != "epoch" or row.get(METRIC) in (None, ""):
            continue
        value = float(row[METRIC])
        if math.isfinite(value):
            values[int(float(row["epoch"]))] = value
    if not values:
        raise StorageError(
            f"{source}: no epoch with {METRIC} yet; the run needs a val dataset and the "
            "topk evaluator, and at least one finished epoch"
        )
    return values


def read_csv_rows(path: str) -> list[dict[str, str]]:
    """The rows of a trainer ``metrics.csv``."""
    reader = csv.DictReader(io.StringIO(storage.read_text(path)))
    if not reader.fieldnames or "epoch" not in reader.fieldnames:
        raise StorageError(f"{path}:1: no 'epoch' column; is this a visionforge metrics.csv?")
    return list(reader)


def read_checkpoint_rows(path: str) -> list[dict[str, Any]]:
    """The history rows stored in a trainer checkpoint."""
    from visionforge.engine import load_checkpoint

    return list(load_checkpoint(path).get("history") or [])


def _epochs_done(checkpoint: str) -> int | None:
    """Finished epochs of ``checkpoint`` from its small manifest sidecar (no torch.load)."""
    try:
        return int(lineage.read_manifest(checkpoint)["position"]["epoch"])
    except (StorageError, KeyError, TypeError, ValueError):
        return None


def load_run_curve(run: str) -> tuple[str, dict[int, float]]:
    """(source, val top-1 by epoch) of a run folder, a ``metrics.csv`` or a ``.ckpt``."""
    if run.endswith(".csv"):
        return run, val_top1_by_epoch(read_csv_rows(run), run)
    if run.endswith(".ckpt"):
        return run, val_top1_by_epoch(read_checkpoint_rows(run), run)
    csv_path = storage.join(run, "metrics.csv")
    ckpt_path = storage.join(run, LAST)
    csv_rows = read_csv_rows(csv_path) if storage.exists(csv_path) else None
    if csv_rows is not None:
        done = _epochs_done(ckpt_path)
        csv_epochs = sum(1 for r in csv_rows if r.get("kind", "epoch") == "epoch")
        if done is None or csv_epochs >= done:
            return csv_path, val_top1_by_epoch(csv_rows, csv_path)
    if storage.exists(ckpt_path):
        return ckpt_path, val_top1_by_epoch(read_checkpoint_rows(ckpt_path), ckpt_path)
    raise StorageError(f"{run}: neither metrics.csv nor last.ckpt found; is this a run folder?")


def plot_against_reference(values: Mapping[int, float], png: str, title: str) -> str:
    """Write the run's curve and the reference points to ``png`` (local path or URL)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ref_epochs = sorted(REFERENCE_VAL_TOP1)
    ax.plot(
        ref_epochs,
        [100 * REFERENCE_VAL_TOP1[e] for e in ref_epochs],
        "s--",
        color="grey",
        label="reference ResNet50 (76.77% at epoch 89)",
    )
    epochs = sorted(values)
    ax.plot(epochs, [100 * values[e] for e in epochs], "o-", label="this run")
    ax.set(title=title, xlabel="epoch", ylabel="val top-1 (%)", ylim=(0, 100))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    plt.close(fig)
    storage.write_bytes_atomic(png, buffer.getvalue())
    return png


def compare_with_reference(run: str, png: str | None = None) -> CurveReport:
    """Read ``run``'s val top-1 and plot it against the reference; the PNG goes beside the
    source file unless ``png`` says where."""
    source, values = load_run_curve(run)
    if png is None:
        png = storage.join(posixpath.dirname(source) or ".", "reference_curve.png")
    plot_against_reference(values, png, f"val top-1 vs reference: {run}")
    return CurveReport(source, values, png)
