"""Teachers: a frozen embedding backbone (transformers DINOv2/DINOv3 or timm) plus a head
that turns embeddings into class logits (class prototypes or a saved linear head).

A teacher is a :class:`~visionforge.interfaces.FrozenModule` for the recipe's ``teacher:``
block: ``teacher(batch) -> {"embedding": [B, D], "logits": [B, C]}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from visionforge import storage
from visionforge.components.datasets import ImageFolder
from visionforge.components.models import load_weights
from visionforge.errors import CheckpointError, ConfigError
from visionforge_distill.cache import TeacherCache
from visionforge_distill.configs import (
    HeadConfig,
    HFTeacherConfig,
    TimmTeacherConfig,
    _TeacherConfig,
)
from visionforge_distill.data import clean_transform

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json")


def files_sha256(path: str) -> str:
    """sha256 of a file, or of a folder's weight and config files (names and bytes, sorted)."""
    local = Path(path).expanduser()
    digest = hashlib.sha256()
    files = (
        sorted(p for p in local.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        if local.is_dir()
        else [local]
    )
    for file in files:
        digest.update(str(file.relative_to(local) if local.is_dir() else file.name).encode())
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


class HFBackbone(nn.Module):
    """A transformers ViT (DINOv2, DINOv3, ...): the CLS token or the mean of patch tokens
    (register tokens excluded) of ``last_hidden_state``."""

    def __init__(self, model: nn.Module, pooling: str) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        config: Any = model.config
        self.registers = int(getattr(config, "num_register_tokens", 0) or 0)
        self.dim = int(config.hidden_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = self.model(pixel_values=images).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        return hidden[:, 1 + self.registers :].mean(1)


class TimmBackbone(nn.Module):
    """A timm model without its classifier: pooled pre-logits features."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.dim = int(net.num_features)  # type: ignore[arg-type]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class Teacher(nn.Module):
    """A frozen teacher: backbone embeddings, optional cache, and a logits head.

    ``prototypes`` heads are computed on the first call (on the run's device) from the clean
    images under ``head.prototypes_from``: the L2-normalized mean embedding per class;
    logits are ``scale x cosine(embedding, prototype)``.
    """

    output_key = "teacher"
    prototypes: torch.Tensor

    def __init__(
        self, backbone: HFBackbone | TimmBackbone, cfg: _TeacherConfig, source: dict[str, Any]
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        self.source = source
        self.dim = backbone.dim
        self.register_buffer("prototypes", torch.empty(0), persistent=False)
        self.linear: nn.Linear | None = None
        if cfg.head.type == "linear":
            self.linear = load_linear_head(cfg.head, self.dim)
        self.cache = TeacherCache(cfg.cache, self.identity(), self.dim) if cfg.cache else None

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Teacher embeddings ``[B, D]`` of normalized image tensors."""
        size = self.cfg.image_size
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
        return self.backbone(images)

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """Class logits from embeddings (the head)."""
        if self.linear is not None:
            return self.linear(embedding.float())
        if self.prototypes.numel() == 0:
            self.prototypes = self.compute_prototypes(embedding.device)
        unit = F.normalize(embedding.float(), dim=-1)
        return self.cfg.head.scale * unit @ self.prototypes.T

    @torch.no_grad()
    def compute_prototypes(self, device: torch.device) -> torch.Tensor:
        """``[C, D]`` unit mean embeddings of each class's clean images."""
        head = self.cfg.head
        assert head.prototypes_from is not None
        images = ImageFolder(head.prototypes_from)
        size = self.cfg.image_size or 224
        transform = clean_transform(size, self.cfg.mean, self.cfg.std)
        sums = torch.zeros(len(images.class_names), self.dim, device=device)
        labels = torch.as_tensor(images.labels, device=device)
        starts = range(0, len(images), head.batch_size)
        for start in tqdm(starts, desc="teacher prototypes", leave=False, disable=None):
            stop = min(start + head.batch_size, len(images))
            batch = torch.stack([transform(images.load_image(i)) for i in range(start, stop)])
            batch = batch.as_subclass(torch.Tensor).to(device)
            sums.index_add_(0, labels[start:stop], self.embed(batch).float())
        return F.normalize(sums, dim=-1)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        images = batch["image"]
        if type(images) is not torch.Tensor:
            images = images.as_subclass(torch.Tensor)
        if self.cache is not None:
            if "index" not in batch or "view" not in batch:
                raise ConfigError(
                    "teacher.cache: batches carry no 'index'/'view'; use the class_folders "
                    "dataset with views: K for data.train"
                )
            embedding = self.cache.lookup(batch["index"], batch["view"], images, self.embed)
        else:
            embedding = self.embed(images)
        return {"embedding": embedding, "logits": self.logits(embedding)}

    def identity(self) -> dict[str, Any]:
        """What the run manifest records instead of the weights."""
        head = self.cfg.head
        return {
            **self.source,
            "embedding_dim": self.dim,
            "image_size": self.cfg.image_size,
            "head": {
                "type": head.type,
                "prototypes_from": head.prototypes_from,
                "scale": head.scale if head.type == "prototypes" else None,
                "sha256": files_sha256(head.path) if head.path else None,
            },
        }


def load_linear_head(head: HeadConfig, dim: int) -> nn.Linear:
    """A linear head from ``torch.save({"weight": [C, D], "bias": [C]})``."""
    assert head.path is not None
    with storage.local_copy(head.path) as local:
        state = torch.load(local, map_location="cpu", weights_only=True)
    weight = state.get("weight") if isinstance(state, dict) else None
    if weight is None or weight.ndim != 2 or weight.shape[1] != dim:
        raise CheckpointError(
            f"teacher.head.path: {head.path}: expected {{'weight': [C, {dim}], 'bias': [C]}}"
        )
    linear = nn.Linear(dim, int(weight.shape[0]))
    linear.load_state_dict({"weight": weight, "bias": state.get("bias", torch.zeros(len(weight)))})
    return linear


def build_hf_teacher(cfg: HFTeacherConfig) -> Teacher:
    """A transformers backbone through ``AutoModel`` (local folder, or hub id online)."""
    from transformers import AutoModel

    where = cfg.path or cfg.hub_id
    assert where is not None
    try:
        model = AutoModel.from_pretrained(
            str(Path(cfg.path).expanduser()) if cfg.path else where,
            local_files_only=cfg.path is not None,
        )
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0]
        field = "teacher.path" if cfg.path else "teacher.hub_id"
        raise ConfigError(f"{field}: cannot load {where} with AutoModel ({reason})") from None
    if not hasattr(model.config, "hidden_size"):
        raise ConfigError(f"teacher: {where} is not a vision transformer with hidden_size")
    source = {
        "name": f"hf:{model.config.model_type}",
        "path": cfg.path,
        "hub_id": cfg.hub_id,
        "revision": getattr(model.config, "_commit_hash", None),
        "sha256": files_sha256(cfg.path) if cfg.path else None,
        "pooling": cfg.pooling,
    }
    return Teacher(HFBackbone(model, cfg.pooling), cfg, source)


def build_timm_teacher(cfg: TimmTeacherConfig) -> Teacher:
    """Any timm model as a teacher (its pooled features), weights from a local file."""
    if not timm.is_model(cfg.name):
        raise ConfigError(f"teacher.name: unknown timm model {cfg.name!r}")
    net = timm.create_model(cfg.name, pretrained=False, num_classes=0, **cfg.kwargs)
    if cfg.weights is not None:
        state = load_weights(cfg.weights)
        missing, _ = net.load_state_dict(state, strict=False)
        if missing:
            raise CheckpointError(
                f"teacher.weights: {cfg.weights} misses {len(missing)} weights of {cfg.name} "
                f"(e.g. {missing[0]})"
            )
    source = {
        "name": f"timm:{cfg.name}",
        "path": cfg.weights,
        "sha256": files_sha256(cfg.weights) if cfg.weights else None,
    }
    return Teacher(TimmBackbone(net), cfg, source)
