"""Torch-free config classes of the distill components (imported when registering)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from visionforge.config import ComponentConfig, InputPath

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DistillationLossConfig(ComponentConfig):
    """alpha x embedding loss + (1 - alpha) x T^2 x KL(teacher_soft || student_soft)."""

    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)
    embedding_loss: Literal["mse", "cosine"] = "mse"
    ce_weight: float = Field(0.0, ge=0, description="weight of a hard-label cross-entropy term")


class HeadConfig(ComponentConfig):
    """How teacher logits come from teacher embeddings.

    ``prototypes``: cosine similarity to per-class mean embeddings of the clean images under
    ``prototypes_from`` (a class-folder root, usually the training set) times ``scale``.
    ``linear``: a linear head saved with ``torch.save({"weight": [C, D], "bias": [C]})`` at
    ``path`` (trained first, e.g. with ``visionforge distill fit-head``).
    """

    type: Literal["prototypes", "linear"] = "prototypes"
    prototypes_from: InputPath | None = None
    scale: float = Field(10.0, gt=0, description="prototypes: logits = scale x cosine")
    path: InputPath | None = None
    batch_size: int = Field(32, ge=1, description="prototypes: images per teacher call")

    @model_validator(mode="after")
    def _source(self) -> HeadConfig:
        if self.type == "prototypes" and self.prototypes_from is None:
            raise ValueError("head.prototypes_from: the class-folder root to build prototypes")
        if self.type == "linear" and self.path is None:
            raise ValueError("head.path: the saved linear head ({'weight', 'bias'})")
        return self


class TeacherCacheConfig(ComponentConfig):
    """Teacher embeddings stored per (image, view) in memory-mapped files under ``dir``."""

    dir: str
    views: int = Field(1, ge=1, description="views per image the dataset draws from")


class _TeacherConfig(ComponentConfig):
    image_size: int | None = Field(
        None, ge=8, description="resize batch images to this size for the teacher (None: as is)"
    )
    head: HeadConfig
    cache: TeacherCacheConfig | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class HFTeacherConfig(_TeacherConfig):
    """A transformers vision backbone (DINOv2, DINOv3, ...) through ``AutoModel``."""

    path: InputPath | None = Field(None, description="local folder saved by save_pretrained")
    hub_id: str | None = Field(
        None, description="hub id (needs network), e.g. facebook/dinov2-base"
    )
    pooling: Literal["cls", "mean_patch"] = "cls"

    @model_validator(mode="after")
    def _one_source(self) -> HFTeacherConfig:
        if (self.path is None) == (self.hub_id is None):
            raise ValueError("path or hub_id: give exactly one (a local folder or a hub id)")
        return self


class TimmTeacherConfig(_TeacherConfig):
    """Any timm model; the embedding is its pooled pre-logits features."""

    name: str
    weights: InputPath | None = Field(None, description="state_dict / safetensors to load")
    kwargs: dict[str, Any] = Field(default_factory=dict)


class StudentConfig(ComponentConfig):
    """A timm backbone + projection to the teacher's embedding size + classifier."""

    backbone: str = "efficientnet_lite0"
    embedding_dim: int = Field(768, ge=1)
    num_classes: int = Field(..., ge=1)
    pretrained_path: InputPath | None = None
    drop_rate: float = Field(0.0, ge=0, lt=1)
    kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to timm")


class ClassFoldersConfig(ComponentConfig):
    """One folder per class (as few as one image each); train views or a retrieval split.

    ``role: train``: augmented views (random resized crop, flip, colour jitter, rotation);
    with ``views`` set, each item is one of ``views`` fixed views per image (the teacher cache
    stores exactly those). ``role: retrieval``: one clean gallery view per image followed by
    ``queries`` augmented views per image (or every image under ``query_root``, clean).
    """

    root: InputPath
    role: Literal["train", "retrieval"] = "train"
    image_size: int = Field(224, ge=8)
    views: int | None = Field(None, ge=1, description="train: fixed views per image (cache)")
    view_seed: int = 0
    queries: int = Field(2, ge=1, description="retrieval: augmented query views per image")
    query_root: InputPath | None = None
    scale: tuple[float, float] = (0.6, 1.0)
    hflip: float = Field(0.5, ge=0, le=1)
    jitter: float = Field(0.3, ge=0, description="brightness/contrast/saturation strength")
    rotation: float = Field(10.0, ge=0, description="max degrees")
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class RetrievalConfig(ComponentConfig):
    """Nearest-neighbour retrieval accuracy (cosine) of queries against a gallery."""

    k: tuple[int, ...] = (1, 5)
    backend: Literal["auto", "torch", "faiss", "usearch"] = "auto"
    approximate: bool = Field(False, description="HNSW search; recall vs exact is reported")
