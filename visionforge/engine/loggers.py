"""Training loggers (console, CSV, TensorBoard, MLflow, W&B) and the training-curves PNG.

Every logger receives the same rows: ``log_step`` at ``log_every_steps`` intervals and
``log_epoch`` once per epoch, each a flat ``{name: float}`` dict.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from visionforge import storage
from visionforge.errors import ConfigError

Row = dict[str, Any]


class Logger(Protocol):
    """What the trainer calls; all methods run on rank 0 only."""

    def log_step(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def log_epoch(self, epoch: int, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


def format_metrics(metrics: Mapping[str, float]) -> str:
    """``name=value`` pairs with 4 significant digits."""
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())


class ConsoleLogger:
    """A tqdm bar per epoch (loss and lr in its postfix) and one summary line per epoch."""

    def __init__(self, epochs: int, enabled: bool = True) -> None:
        self.epochs = epochs
        self.enabled = enabled
        self.bar: tqdm[Any] | None = None

    def start_epoch(self, epoch: int, total: int, initial: int) -> None:
        self.close()
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            disable=not self.enabled,
            dynamic_ncols=True,
            mininterval=0.1 if sys.stderr.isatty() else 30.0,  # log files: a line per 30 s
            leave=False,
        )

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def log_step(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)

    def log_epoch(self, epoch: int, step: int, metrics: Mapping[str, float]) -> None:
        self.close()
        if self.enabled:
            tqdm.write(f"epoch {epoch + 1}/{self.epochs} step {step}: {format_metrics(metrics)}")

    def message(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def write_csv(rows: Sequence[Row], path: Path) -> None:
    """Write ``rows`` (union of their keys as columns) atomically to ``path``."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    storage.write_bytes_atomic(str(path), buffer.getvalue().encode())


class TensorBoardLogger:
    """Scalars through ``torch.utils.tensorboard``; ``purge_step`` drops events after a resume
    point so a resumed run does not show the replayed steps twice."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log_step(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"step/{key}", value, step)

    def log_epoch(self, epoch: int, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.add_scalar("epoch", epoch + 1, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowLogger:
    """Logs params (the flattened recipe) and metrics to the active MLflow tracking URI."""

    def __init__(self, run_name: str, params: Mapping[str, Any]) -> None:
        import mlflow

        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=run_name)
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def log_step(self, step: int, metrics: Mapping[str, float]) -> None:
        self.mlflow.log_metrics(dict(metrics), step=step)

    def log_epoch(self, epoch: int, step: int, metrics: Mapping[str, float]) -> None:
        self.mlflow.log_metrics({**metrics, "epoch": epoch + 1}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class WandbLogger:
    """Logs the recipe as config and metrics to Weights & Biases (``WANDB_*`` env settings)."""

    def __init__(self, run_name: str, config: Mapping[str, Any]) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(name=run_name, config=dict(config))

    def log_step(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def log_epoch(self, epoch: int, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log({**metrics, "epoch": epoch + 1}, step=step)

    def close(self) -> None:
        self.run.finish()


def require_installed(loggers: Sequence[str]) -> None:
    """ConfigError for an optional logger whose package is missing."""
    packages = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboard"}
    for name in loggers:
        package = packages.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"trainer.loggers: {name!r} is requested but {package} is not installed; "
                f"pip install {package} or remove it from trainer.loggers"
            )


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


MAX_CURVES = 10
"""Most curves a metrics panel draws: a detector reports dozens of figures per epoch (per-class
AP, COCO's size breakdown, every loss term of every decoder layer)."""


def plot_curves(history: Sequence[Row], path: Path, title: str | None = None) -> Path:
    """training_curves.png against epochs (1 = the end of the first epoch): train loss per
    logged step with the epoch means, the learning rate, the validation metrics and the
    training loss terms (each at most :data:`MAX_CURVES` headline curves, see
    :func:`headline_keys`)."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state
    from matplotlib.ticker import MaxNLocator

    steps = [r for r in history if r.get("kind") == "step"]
    epochs = [r for r in history if r.get("kind") == "epoch"]
    at_epoch = _epoch_position(epochs)
    axis = "epoch" if at_epoch is not None else "optimizer step"
    where = at_epoch or (lambda step: float(step))
    groups = [
        (name, keys)
        for name, keys in (
            ("validation", headline_keys(epochs, "val/")),
            ("training loss terms", headline_keys(epochs, "train/")),
        )
        if keys
    ]
    legend_rows = max([math.ceil(len(keys) / 2) for _, keys in groups], default=0)
    panels = 2 + len(groups)
    fig = Figure(figsize=(4.5 * panels, 4 + 0.22 * legend_rows), layout="constrained")
    if title:
        fig.suptitle(title)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    ax_loss, ax_lr = axes[0], axes[1]
    step_x = [where(r["step"]) for r in steps]
    if steps:
        losses = [r.get("train/loss", math.nan) for r in steps]
        ax_loss.plot(step_x, losses, lw=1, alpha=0.6, label="per logged step")
        ax_lr.plot(step_x, [r["lr"] for r in steps])
    epoch_losses = [(where(r["step"]), r["train/loss"]) for r in epochs if "train/loss" in r]
    if epoch_losses:
        ax_loss.plot(*zip(*epoch_losses, strict=True), "o-", label="epoch mean")
    val_losses = [(where(r["step"]), r["val/loss"]) for r in epochs if _finite(r.get("val/loss"))]
    if val_losses:
        ax_loss.plot(*zip(*val_losses, strict=True), "s--", label="val")
    ax_loss.set(title="loss", xlabel=axis)
    if steps or epoch_losses:
        ax_loss.legend()
    ax_lr.set(title="learning rate", xlabel=axis)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax, (name, keys) in zip(axes[2:], groups, strict=True):
        for key in keys:
            points = [(r["epoch"], r[key]) for r in epochs if _finite(r.get(key))]
            line = ax.plot(*zip(*points, strict=True), "o-", ms=3, label=key)[0]
            x, y = points[-1]
            ax.annotate(
                f"{y:.3g}",
                (x, y),
                textcoords="offset points",
                xytext=(4, 0),
                color=line.get_color(),
                fontsize="x-small",
            )
        ax.set(title=name, xlabel="epoch")
        ax.margins(x=0.15, y=0.1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    last = max([*step_x, *(where(r["step"]) for r in epochs)], default=0.0)
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
        if at_epoch is not None:
            ax.set_xlim(0, max(1.0, last))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    with storage.atomic_local_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


def headline_keys(epochs: Sequence[Row], prefix: str) -> list[str]:
    """The epoch metrics under ``prefix`` worth a curve, at most :data:`MAX_CURVES`, in the
    order they were logged. Left out: ``train/loss`` (the loss panel's), per-class figures (a
    second ``/``, e.g. ``val/AP/cat``), series never finite and >= 0 (COCO's -1 for an absent
    size range) and series equal to an earlier one (``APs`` = ``AP`` when every object is
    small). Past the limit the shortest names stay: aggregates (``loss_ce``) before their
    per-layer parts (``loss_ce_dn_0``)."""
    seen: dict[str, None] = {}
    for row in epochs:
        for key in row:
            if key.startswith(prefix) and key != "train/loss" and key.count("/") == 1:
                seen.setdefault(key, None)
    series: dict[str, tuple[float | None, ...]] = {}
    for key in seen:
        values = tuple(float(r[key]) if _finite(r.get(key)) else None for r in epochs)
        if any(v is not None and v >= 0 for v in values) and values not in series.values():
            series[key] = values
    shortest = set(sorted(series, key=len)[:MAX_CURVES])
    return [key for key in series if key in shortest]


def _epoch_position(epochs: Sequence[Row]) -> Callable[[float], float] | None:
    """Optimizer step -> epochs trained (fractional), from the epoch rows' (step, epoch)
    pairs; None before the first epoch ended."""
    anchors = sorted({(float(r["step"]), float(r["epoch"])) for r in epochs if r["step"] > 0})
    if not anchors:
        return None
    steps = [0.0] + [s for s, _ in anchors]
    done = [0.0] + [e for _, e in anchors]
    slope = (done[-1] - done[-2]) / max(steps[-1] - steps[-2], 1.0)

    def position(step: float) -> float:
        if step >= steps[-1]:  # a stopped run's last steps: continue the last epoch's pace
            return done[-1] + (step - steps[-1]) * slope
        return float(np.interp(step, steps, done))

    return position


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
