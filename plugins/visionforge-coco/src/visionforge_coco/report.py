"""Evaluation reports on disk: metrics.json, per-class and error tables, PNG figures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from visionforge_coco.analysis import analyze_errors
from visionforge_coco.evaluation import CocoEvalResult


def write_eval_report(result: CocoEvalResult, out_dir: str | Path, plots: bool = True) -> list[str]:
    """Write ``metrics.json``, ``per_class.csv``, ``errors.csv`` and (``plots``) the PNGs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(result.flat_metrics(), indent=2) + "\n")
    written.append(str(metrics_path))
    per_class = out / "per_class.csv"
    with per_class.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["category_id", "name", "AP"])
        for cat, name in zip(result.category_ids, result.category_names, strict=True):
            writer.writerow([cat, name, f"{result.per_class_ap[name]:.6f}"])
    written.append(str(per_class))
    analysis = analyze_errors(result)
    errors = out / "errors.csv"
    with errors.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kind", "type", "count"])
        writer.writerows(analysis.rows())
    written.append(str(errors))
    if plots:
        from visionforge_coco.plots import plot_errors, plot_pr_curves

        written.append(plot_pr_curves(result, out / "pr_curves.png"))
        written.append(plot_errors(analysis, out / "errors.png"))
    return written
