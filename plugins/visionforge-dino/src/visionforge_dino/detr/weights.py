"""Loading DETR weights: official facebookresearch/detr release files, visionforge
checkpoints and plain state_dicts, with a report of what was kept.

The official layout differs from ours only in the backbone prefix (``backbone.0.body.`` ->
``backbone.body.``). A class head of another size is re-initialized (fine-tuning on other
classes); a backbone of another architecture (an R50 file into R101) is not loaded, the
transformer and heads are.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from visionforge.components.models import load_weights
from visionforge.errors import CheckpointError

logger = logging.getLogger(__name__)

OFFICIAL_BACKBONE_PREFIX = "backbone.0.body."
BACKBONE_PREFIX = "backbone.body."
DETR_CLASS_HEAD = ("class_embed.weight", "class_embed.bias")


def from_official_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the official DETR/DINO backbone keys (``backbone.0.body.*``) to ours."""
    return {
        (
            BACKBONE_PREFIX + k[len(OFFICIAL_BACKBONE_PREFIX) :]
            if k.startswith(OFFICIAL_BACKBONE_PREFIX)
            else k
        ): v
        for k, v in state.items()
    }


def to_official_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys -> the official layout (for files the original code can read)."""
    return {
        (
            OFFICIAL_BACKBONE_PREFIX + k[len(BACKBONE_PREFIX) :]
            if k.startswith(BACKBONE_PREFIX)
            else k
        ): v
        for k, v in state.items()
    }


@dataclass
class WeightsReport:
    """What loading a weights file did: ``loaded`` keys, ``reinitialized`` (class head of
    another size), ``not_loaded`` (model keys left at their initialization: a backbone of
    another architecture) and ``ignored`` (file keys not used)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialized: list[str] = field(default_factory=list)
    not_loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.reinitialized or self.not_loaded or self.ignored)

    def summary(self) -> str:
        parts = [f"{self.source}: loaded {len(self.loaded)} tensors"]
        if self.reinitialized:
            parts.append(f"re-initialized {', '.join(self.reinitialized)} (another class count)")
        if self.not_loaded:
            groups = sorted({k.split(".")[0] for k in self.not_loaded})
            parts.append(
                f"kept the initial {', '.join(groups)} ({len(self.not_loaded)} tensors: the "
                "file's backbone is another architecture)"
            )
        if self.ignored:
            parts.append(f"ignored {len(self.ignored)} file tensors ({self.ignored[0]}, ...)")
        return "; ".join(parts)


def load_state_into(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    *,
    class_head: tuple[str, ...] = DETR_CLASS_HEAD,
    backbone_prefix: str = BACKBONE_PREFIX,
) -> WeightsReport:
    """Load ``state`` (official or our layout) into ``model`` strictly, except that the
    ``class_head`` keys may differ in shape and the keys under ``backbone_prefix`` are
    loaded only if the file's backbone has exactly the model's keys and shapes. Anything
    else missing, unexpected or of another shape raises CheckpointError naming it."""
    state = from_official_layout(state)
    own = model.state_dict()
    report = WeightsReport(source)

    def is_backbone(key: str) -> bool:
        return key.startswith(backbone_prefix)

    file_backbone = {k: v for k, v in state.items() if is_backbone(k)}
    own_backbone = {k: v for k, v in own.items() if is_backbone(k)}
    backbone_fits = file_backbone.keys() == own_backbone.keys() and all(
        v.shape == own_backbone[k].shape for k, v in file_backbone.items()
    )
    missing = sorted(k for k in own if k not in state and not is_backbone(k))
    unexpected = sorted(k for k in state if k not in own and not is_backbone(k))
    wrong = sorted(
        k
        for k, v in state.items()
        if k in own and not is_backbone(k) and k not in class_head and v.shape != own[k].shape
    )
    if missing or unexpected or wrong:
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong]
        raise CheckpointError(
            f"model.weights: {source} does not fit this model: {len(missing)} missing "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} of "
            f"another shape {shapes[:3]}; check num_queries, hidden_dim, the layer counts "
            "and pre_norm against the file"
        )
    chosen: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if is_backbone(key) and not backbone_fits:
            report.ignored.append(key)
        elif key in class_head and value.shape != own[key].shape:
            report.reinitialized.append(key)
        else:
            chosen[key] = value
    if not backbone_fits:
        report.not_loaded = sorted(own_backbone)
    model.load_state_dict(chosen, strict=False)
    report.loaded = sorted(chosen)
    return report


def load_detr_weights(model: nn.Module, path: str) -> WeightsReport:
    """Read ``path`` (local or URL; ``weights_only=True``) and load it into a DETR; logs the
    report, and warns when anything was re-initialized or left out."""
    report = load_state_into(model, load_weights(path), path)
    if report.complete:
        logger.info(report.summary())
    else:
        warnings.warn(f"model.weights: {report.summary()}", stacklevel=2)
    return report
