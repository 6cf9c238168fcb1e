"""Entry module of the coco plugin: registers its components and CLI group (torch-free)."""

from __future__ import annotations

import argparse

from visionforge import hookimpl
from visionforge.registry import Registries
from visionforge_coco import configs

_PKG = "visionforge_coco"


@hookimpl
def visionforge_register(registries: Registries) -> None:
    """Datasets coco/yolo/synthetic_shapes, evaluators coco_bbox/coco_segm, converters."""
    registries.datasets.register(
        "coco",
        config=configs.CocoDatasetConfig,
        builder=f"{_PKG}.datasets:build_coco",
        description="COCO images + annotations JSON (local or fsspec URL)",
    )
    registries.datasets.register(
        "yolo",
        config=configs.YoloDatasetConfig,
        builder=f"{_PKG}.datasets:build_yolo",
        description="Ultralytics YOLO layout (data.yaml, images/<split>, labels/<split>)",
    )
    registries.datasets.register(
        "synthetic_shapes",
        config=configs.SyntheticShapesConfig,
        builder=f"{_PKG}.datasets:build_synthetic_shapes",
        description="deterministic generated rectangles/ellipses/triangles",
    )
    registries.evaluators.register(
        "coco_bbox",
        config=configs.CocoBboxEvaluatorConfig,
        builder=f"{_PKG}.evaluator:build_coco_bbox",
        description="COCO box AP/AR, per-class AP, best F1 (faster-coco-eval or pycocotools)",
    )
    registries.evaluators.register(
        "coco_segm",
        config=configs.CocoSegmEvaluatorConfig,
        builder=f"{_PKG}.evaluator:build_coco_segm",
        description="COCO mask AP/AR, per-class AP, best F1",
    )
    registries.converters.register(
        "yolo2coco",
        config=configs.Yolo2CocoConfig,
        builder=f"{_PKG}.converters:run_yolo2coco",
        description="YOLO root -> COCO (boxes, polygons, crowd kept)",
    )
    registries.converters.register(
        "coco2yolo",
        config=configs.Coco2YoloConfig,
        builder=f"{_PKG}.converters:run_coco2yolo",
        description="COCO -> YOLO root (boxes or polygons, crowd kept in crowd.json)",
    )


@hookimpl
def visionforge_cli(subparsers: argparse._SubParsersAction) -> None:
    """``visionforge coco convert|split|verify|stats|eval``."""
    from visionforge_coco.cli import add_coco_commands

    add_coco_commands(subparsers)
