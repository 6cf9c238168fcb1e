"""Registry builders of the converters: ``converters.build(cfg)`` runs the conversion."""

from __future__ import annotations

from visionforge_coco.configs import Coco2YoloConfig, Yolo2CocoConfig
from visionforge_coco.convert import ConvertReport, coco_to_yolo, yolo_to_coco


def run_yolo2coco(cfg: Yolo2CocoConfig) -> ConvertReport:
    """Convert a YOLO root to COCO as configured."""
    return yolo_to_coco(
        cfg.src,
        cfg.dst,
        split=cfg.split,
        id_names=cfg.id_names,
        link=cfg.link,
        skip_invalid=cfg.skip_invalid,
        tolerance=cfg.tolerance,
        strict_labels=cfg.strict_labels,
    )


def run_coco2yolo(cfg: Coco2YoloConfig) -> ConvertReport:
    """Convert COCO to a YOLO root as configured."""
    return coco_to_yolo(
        cfg.src,
        cfg.annotations,
        cfg.dst,
        split=cfg.split,
        link=cfg.link,
        rows=cfg.rows,
        crowd=cfg.crowd,
        skip_invalid=cfg.skip_invalid,
    )
