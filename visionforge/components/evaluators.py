"""Top-k classification accuracy, with optional per-class accuracy and a confusion matrix."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist

from visionforge import storage
from visionforge.components.configs import TopKConfig
from visionforge.errors import ConfigError

CONFUSION_PNG_MAX_CLASSES = 50


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class TopKAccuracy:
    """Fraction of samples whose label is among the ``k`` highest logits, for each ``k``.

    A ``k`` of at least the number of classes ``K`` is always 1.0 and not reported (the
    primary metric excepted: it is computed as ``min(k, K)``). Soft targets (mixup/cutmix)
    count their argmax as the label.
    Counts stay on the logits' device until :meth:`compute`. Set ``class_names`` (e.g. from
    the dataset) to name classes in per-class metrics and reports.
    """

    mode: Literal["max", "min"] = "max"

    def __init__(
        self,
        ks: Sequence[int] = (1, 5),
        per_class: bool = False,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not ks or any(k < 1 for k in ks):
            raise ConfigError(f"evaluator.k: expected positive integers, got {list(ks)}")
        self.ks = tuple(ks)
        self.per_class = per_class
        self.class_names = list(class_names) if class_names is not None else None
        self.primary_metric = "top1" if 1 in self.ks else f"top{self.ks[0]}"
        self.reset()

    def reset(self) -> None:
        """Forget every update."""
        self._correct: torch.Tensor | None = None
        self._total = 0
        self._num_classes: int | None = None
        self._label_low: torch.Tensor | None = None
        self._label_high: torch.Tensor | None = None
        self._confusion: torch.Tensor | None = None

    def update(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        """Count one batch: ``outputs["logits"]`` ``[B, K]``, ``batch["label"]`` ``[B]`` or
        ``[B, K]`` soft targets. Never synchronizes with the device (labels outside
        ``0..K-1`` are reported by :meth:`compute`)."""
        logits = outputs["logits"].detach()
        labels = batch["label"]
        if labels.is_floating_point():
            labels = labels.argmax(dim=-1)
        labels = labels.to(logits.device)
        if labels.numel() == 0:
            return
        num_classes = logits.shape[1]
        if self._num_classes is None:
            self._num_classes = num_classes
        elif self._num_classes != num_classes:
            raise ConfigError(
                f"evaluator: logits changed from {self._num_classes} to {num_classes} classes "
                "between batches; call reset() between datasets"
            )
        low, high = labels.aminmax()
        if self._label_low is None or self._label_high is None:
            self._label_low, self._label_high = low, high
        else:
            self._label_low = torch.minimum(self._label_low, low)
            self._label_high = torch.maximum(self._label_high, high)
        top = logits.topk(min(max(self.ks), num_classes), dim=1).indices
        hits = top == labels[:, None]
        correct = torch.stack([hits[:, : min(k, num_classes)].any(dim=1).sum() for k in self.ks])
        self._correct = correct if self._correct is None else self._correct + correct
        self._total += labels.numel()
        if self.per_class:
            if self._confusion is None:
                self._confusion = logits.new_zeros(num_classes, num_classes, dtype=torch.int64)
            pairs = labels.clamp(0, num_classes - 1) * num_classes + top[:, 0]
            self._confusion.view(-1).index_add_(0, pairs, torch.ones_like(pairs))

    def _names(self, num_classes: int) -> list[str]:
        if self.class_names is not None and len(self.class_names) == num_classes:
            return self.class_names
        return [str(i) for i in range(num_classes)]

    def _per_class(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(support, accuracy) per class; accuracy is NaN for classes without samples."""
        assert self._confusion is not None
        confusion = self._confusion.double().cpu()
        support = confusion.sum(dim=1)
        accuracy = confusion.diagonal() / support
        return support, accuracy

    def compute(self) -> dict[str, float]:
        """``top{k}`` fractions; with ``per_class`` also ``mean_class_acc`` (over classes
        with samples). Per-class accuracies come from :meth:`details`. Under DDP the counts
        of every rank are summed first (a collective: every rank calls it)."""
        if _distributed() and self._correct is not None:
            return self._summed_over_ranks().local_metrics()
        return self.local_metrics()

    def local_metrics(self) -> dict[str, float]:
        """:meth:`compute` over this process's counts only."""
        if self._correct is None or self._label_low is None or self._label_high is None:
            raise ConfigError("evaluator: no samples were evaluated; is the dataset empty?")
        low, high = int(self._label_low), int(self._label_high)
        num_classes = self._num_classes or 0
        if low < 0 or high >= num_classes:
            raise ConfigError(
                f"evaluator: labels range over {low}..{high} but the model has "
                f"{self._num_classes} outputs; set model.num_classes to the dataset's classes"
            )
        metrics = {
            f"top{k}": float(c) / self._total
            for k, c in zip(self.ks, self._correct.tolist(), strict=True)
            if k < num_classes or f"top{k}" == self.primary_metric
        }
        if self.per_class:
            support, accuracy = self._per_class()
            metrics["mean_class_acc"] = float(accuracy[support > 0].mean())
        return metrics

    def _summed_over_ranks(self) -> TopKAccuracy:
        """A single-process copy holding every rank's counts."""
        assert self._correct is not None and self._label_low is not None
        assert self._label_high is not None
        device = self._correct.device
        low, high = self._label_low.clone(), self._label_high.clone()
        counts = [self._correct.clone(), torch.tensor(self._total, device=device)]
        if self._confusion is not None:
            counts.append(self._confusion.clone())
        for tensor in counts:
            dist.all_reduce(tensor)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        merged = TopKAccuracy(self.ks, self.per_class, self.class_names)
        merged.load_state_dict(
            {
                "correct": counts[0],
                "total": int(counts[1]),
                "num_classes": self._num_classes,
                "label_low": low,
                "label_high": high,
                "confusion": counts[2] if self._confusion is not None else None,
            }
        )
        return merged

    def details(self) -> dict[str, float]:
        """With ``per_class``: ``acc/<class name>`` for every class with samples. Kept out
        of :meth:`compute` so epoch logs stay readable with 1000 classes; ``visionforge
        eval`` prints them."""
        if not self.per_class or self._confusion is None:
            return {}
        support, accuracy = self._per_class()
        names = self._names(len(support))
        return {
            f"acc/{name}": acc
            for name, acc, seen in zip(
                names, accuracy.tolist(), (support > 0).tolist(), strict=True
            )
            if seen
        }

    def state_dict(self) -> dict[str, Any]:
        """The running counts (tensors and ints), so a resumed epoch keeps counting."""
        return {
            "correct": self._correct,
            "total": self._total,
            "num_classes": self._num_classes,
            "label_low": self._label_low,
            "label_high": self._label_high,
            "confusion": self._confusion,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore counts written by :meth:`state_dict`."""
        self._correct = state["correct"]
        self._total = int(state["total"])
        self._num_classes = state["num_classes"]
        self._label_low = state["label_low"]
        self._label_high = state["label_high"]
        self._confusion = state["confusion"]

    def write_report(self, out_dir: str) -> list[str]:
        """With ``per_class``: ``per_class.json`` (accuracy and support per class, confusion
        matrix rows = labels, columns = predictions) and, for at most 50 classes,
        ``confusion_matrix.png``. Returns the written paths (local or URL)."""
        if not self.per_class or self._confusion is None:
            return []
        support, accuracy = self._per_class()
        names = self._names(len(support))
        report = {
            "metrics": self.compute(),
            "classes": [
                {
                    "index": i,
                    "name": name,
                    "support": int(n),
                    "accuracy": None if n == 0 else float(a),
                }
                for i, (name, n, a) in enumerate(
                    zip(names, support.tolist(), accuracy.tolist(), strict=True)
                )
            ],
            "confusion_matrix": self._confusion.cpu().tolist(),
        }
        json_path = storage.join(out_dir, "per_class.json")
        storage.write_bytes_atomic(json_path, json.dumps(report, indent=1).encode())
        paths = [json_path]
        if len(names) <= CONFUSION_PNG_MAX_CLASSES:
            png_path = storage.join(out_dir, "confusion_matrix.png")
            storage.write_bytes_atomic(png_path, self._confusion_png(names))
            paths.append(png_path)
        return paths

    def _confusion_png(self, names: list[str]) -> bytes:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        assert self._confusion is not None
        counts = self._confusion.cpu()
        rows = counts.double() / counts.sum(dim=1, keepdim=True).clamp(min=1)
        size = max(4.0, 0.35 * len(names) + 2.0)
        fig = Figure(figsize=(size + 1.0, size))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        image = ax.imshow(rows.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(image, ax=ax, label="fraction of the true class")
        ticks = range(len(names))
        ax.set_xticks(ticks, names, rotation=90, fontsize="small")
        ax.set_yticks(ticks, names, fontsize="small")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        top1 = float(counts.diagonal().sum()) / max(int(counts.sum()), 1)
        ax.set_title(f"confusion matrix (top-1 accuracy {top1:.3f})")
        if len(names) <= 20:
            for (i, j), n in zip(
                torch.cartesian_prod(torch.arange(len(names)), torch.arange(len(names))).tolist(),
                counts.flatten().tolist(),
                strict=True,
            ):
                if n:
                    color = "white" if rows[i, j] > 0.5 else "black"
                    ax.text(j, i, str(n), ha="center", va="center", color=color, fontsize=7)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def build_topk(cfg: TopKConfig) -> TopKAccuracy:
    """The ``topk`` evaluator."""
    return TopKAccuracy(ks=cfg.k, per_class=cfg.per_class)
