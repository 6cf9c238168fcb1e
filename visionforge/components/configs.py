"""Torch-free config classes of the core components (imported when registering)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from visionforge.config import ComponentConfig, InputPath


class ClassifierModelConfig(ComponentConfig):
    """A classification network from a model zoo, wrapped to take batches."""

    name: str = Field(..., description="architecture name in the zoo, e.g. resnet50")
    num_classes: int | None = Field(None, ge=1)
    pretrained_path: InputPath | None = Field(
        None, description="local path or URL of a state_dict / checkpoint to load"
    )
    in_chans: int = Field(3, ge=1)
    kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to the zoo")


class TimmModelConfig(ClassifierModelConfig):
    drop_path_rate: float = Field(0.0, ge=0, lt=1)
    drop_rate: float = Field(0.0, ge=0, lt=1)


class TorchvisionModelConfig(ClassifierModelConfig):
    pass


class ClassificationTransformConfig(ComponentConfig):
    image_size: int = Field(224, ge=8)
    augment: Literal["train", "eval", "none"] = Field(
        "eval", description="train: RandomResizedCrop+flip; eval: resize+center crop"
    )
    resize_ratio: float = Field(0.875, gt=0, le=1, description="eval: crop / resize size")
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    normalize: bool = Field(True, description="False: keep uint8 (normalize on device)")


class ImageFolderConfig(ClassificationTransformConfig):
    """Class-per-folder images (``root/<class>/<image>``), local or fsspec URL."""

    root: InputPath
    extensions: tuple[str, ...] = Field(
        (".jpg", ".jpeg", ".png", ".webp", ".gif"),
        description="file suffixes taken as images (formats torchvision.io.decode_image reads)",
    )


class SyntheticClassificationConfig(ComponentConfig):
    """Deterministic generated images whose class is learnable from colour and shape."""

    num_classes: int = Field(4, ge=2)
    num_samples: int = Field(256, ge=1)
    image_size: int = Field(32, ge=8)
    channels: int = Field(3, ge=1)
    seed: int = 0


class CrossEntropyConfig(ComponentConfig):
    """Cross-entropy on hard labels or soft targets (mixup/cutmix)."""

    label_smoothing: float = Field(0.0, ge=0, lt=1)


class TopKConfig(ComponentConfig):
    """Top-k accuracy (fractions in [0, 1]) and optionally per-class accuracy."""

    k: tuple[int, ...] = (1, 5)
    per_class: bool = False


class LocalRunnerConfig(ComponentConfig):
    """Run here: in-process (nproc 1) or through torchrun with nproc processes."""

    nproc: int = Field(1, ge=1)
    backend: Literal["auto", "gloo", "nccl"] = "auto"


class OnnxExporterConfig(ComponentConfig):
    """Export ``model.export_module()`` to ONNX and check it with onnxruntime."""

    opset: int = Field(18, ge=7)
    dynamic_batch: bool = True
    input_size: tuple[int, ...] | None = Field(None, description="C,H,W of the example input")
    tolerance: float = Field(1e-4, gt=0, description="max abs diff vs PyTorch")
    check: bool = True
