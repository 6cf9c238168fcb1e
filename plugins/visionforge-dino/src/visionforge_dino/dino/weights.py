"""Loading DINO weights: official IDEA-Research/DINO release files, visionforge checkpoints
and plain state_dicts.

The release files hold ``{"model": state_dict, "args": argparse.Namespace, ...}``; they are
read with ``weights_only=True`` with ``argparse.Namespace`` allow-listed. DINO shares one
class head and one box head across the decoder layers, and the official state_dict lists
them under every name they are reachable by (``class_embed.N``, ``bbox_embed.N``,
``transformer.decoder.class_embed.N``, ``transformer.decoder.bbox_embed.N``): those copies
must be equal and collapse to our single ``class_embed`` / ``bbox_embed``.
"""

from __future__ import annotations

import argparse
import logging
import re
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from visionforge.components.models import load_weights
from visionforge.errors import CheckpointError
from visionforge_dino.detr.weights import WeightsReport, load_state_into

logger = logging.getLogger(__name__)

DINO_CLASS_HEADS = (
    "class_embed.weight",
    "class_embed.bias",
    "transformer.enc_out_class_embed.weight",
    "transformer.enc_out_class_embed.bias",
    "label_enc.weight",
)
"""Keys re-initialized when the file has another class count (fine-tuning)."""

_SHARED_HEAD = re.compile(r"^(?:transformer\.decoder\.)?(class_embed|bbox_embed)\.\d+\.(.+)$")


def collapse_shared_heads(
    state: Mapping[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """Map every per-layer copy of the shared heads to ``class_embed.*`` / ``bbox_embed.*``;
    copies that differ raise (the file was trained without head sharing)."""
    result: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _SHARED_HEAD.match(key)
        if match is None:
            result[key] = value
            continue
        target = f"{match.group(1)}.{match.group(2)}"
        first = result.get(target)
        if first is None:
            result[target] = value
        elif first.shape != value.shape or not torch.equal(first, value):
            raise CheckpointError(
                f"model.weights: {source}: {key} differs from the other copies of {target}; "
                "this model shares one head across decoder layers (dec_pred_*_embed_share)"
            )
    return result


def read_dino_state(path: str) -> dict[str, torch.Tensor]:
    """The state_dict in ``path`` (official release file, visionforge checkpoint or plain
    state_dict), shared heads collapsed."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        state = load_weights(path)
    return collapse_shared_heads(state, path)


def load_dino_weights(model: nn.Module, path: str) -> WeightsReport:
    """Load ``path`` into a DINO; logs the report, and warns when anything was re-initialized
    or left out (another class count, another backbone)."""
    report = load_state_into(model, read_dino_state(path), path, class_head=DINO_CLASS_HEADS)
    if report.complete:
        logger.info(report.summary())
    else:
        warnings.warn(f"model.weights: {report.summary()}", stacklevel=2)
    return report
