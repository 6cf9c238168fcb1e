"""Entry module of the distill plugin: registers its components and CLI (torch-free)."""

from __future__ import annotations

import argparse

from visionforge import hookimpl
from visionforge.registry import Registries
from visionforge_distill import configs

_PKG = "visionforge_distill"


@hookimpl
def visionforge_register(registries: Registries) -> None:
    """Register the teachers, the student, the loss, the dataset and the evaluator."""
    registries.models.register(
        "hf_teacher",
        config=configs.HFTeacherConfig,
        builder=f"{_PKG}.teachers:build_hf_teacher",
        description="frozen transformers teacher (DINOv2/DINOv3 via AutoModel) for teacher:",
    )
    registries.models.register(
        "timm_teacher",
        config=configs.TimmTeacherConfig,
        builder=f"{_PKG}.teachers:build_timm_teacher",
        description="frozen timm teacher (pooled features) for teacher:",
    )
    registries.models.register(
        "distill_student",
        config=configs.StudentConfig,
        builder=f"{_PKG}.student:build_student",
        description="timm backbone + projection to the teacher's embedding + classifier",
    )
    registries.losses.register(
        "distillation",
        config=configs.DistillationLossConfig,
        builder=f"{_PKG}.loss:build_distillation",
        description="alpha x embedding loss + (1 - alpha) x T^2 x KL on softened logits",
    )
    registries.datasets.register(
        "class_folders",
        config=configs.ClassFoldersConfig,
        builder=f"{_PKG}.data:build_class_folders",
        description="one folder per class; training views or a retrieval gallery + queries",
    )
    registries.evaluators.register(
        "retrieval",
        config=configs.RetrievalConfig,
        builder=f"{_PKG}.evaluator:build_retrieval",
        description="top-k cosine nearest-neighbour accuracy (faiss / usearch / torch)",
    )


@hookimpl
def visionforge_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``visionforge distill build-index|query``."""
    from visionforge_distill.cli import add_commands

    add_commands(subparsers)
