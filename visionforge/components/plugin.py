"""Registers the core components. Torch-free: builders are lazy references."""

from __future__ import annotations

from visionforge.components import configs
from visionforge.hookspecs import hookimpl
from visionforge.registry import Registries

_PKG = "visionforge.components"


@hookimpl
def visionforge_register(registries: Registries) -> None:
    registries.models.register(
        "timm",
        config=configs.TimmModelConfig,
        builder=f"{_PKG}.models:build_timm",
        description="any timm classifier (timm.create_model)",
    )
    registries.models.register(
        "torchvision",
        config=configs.TorchvisionModelConfig,
        builder=f"{_PKG}.models:build_torchvision",
        description="any torchvision classification model (torchvision.models.get_model)",
    )
    registries.datasets.register(
        "image_folder",
        config=configs.ImageFolderConfig,
        builder=f"{_PKG}.datasets:build_image_folder",
        description="class-per-folder images, local or fsspec URL",
    )
    registries.datasets.register(
        "synthetic_classification",
        config=configs.SyntheticClassificationConfig,
        builder=f"{_PKG}.datasets:build_synthetic_classification",
        description="deterministic generated classification images",
    )
    registries.losses.register(
        "cross_entropy",
        config=configs.CrossEntropyConfig,
        builder=f"{_PKG}.losses:build_cross_entropy",
        description="cross-entropy with label smoothing and soft targets",
    )
    registries.evaluators.register(
        "topk",
        config=configs.TopKConfig,
        builder=f"{_PKG}.evaluators:build_topk",
        description="top-k classification accuracy",
    )
    registries.runners.register(
        "local",
        config=configs.LocalRunnerConfig,
        builder="visionforge.runners.local:build_local",
        description="run here, in-process or with torchrun",
    )
    registries.exporters.register(
        "onnx",
        config=configs.OnnxExporterConfig,
        builder="visionforge.export.onnx:build_onnx",
        description="ONNX with onnxruntime parity check",
    )
