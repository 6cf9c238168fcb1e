"""The DINO detector: ``model(batch)`` -> ``pred_logits`` / ``pred_boxes`` (+ auxiliary,
encoder and denoising outputs for the loss), ``postprocess`` -> top-k detections per image,
``export_module`` -> the tensor-only graph."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert

from visionforge_dino.detr.backbone import ResNetBackbone
from visionforge_dino.detr.model import (
    MLP,
    detection_outputs,
    image_sizes,
    padding_mask,
    plain_images,
)
from visionforge_dino.detr.position_encoding import SinePositionEncoding
from visionforge_dino.detr.targets import normalize_targets
from visionforge_dino.detr.weights import WeightsReport
from visionforge_dino.dino.denoising import DenoisingQueries, denoising_queries
from visionforge_dino.dino.transformer import DeformableTransformer, inverse_sigmoid

PRIOR_PROBABILITY = 0.01
"""Initial sigmoid score of every class (the focal-loss prior of RetinaNet and DINO)."""


def _projection(in_channels: int, dim: int, groups: int, *, downsample: bool) -> nn.Sequential:
    conv = (
        nn.Conv2d(in_channels, dim, kernel_size=3, stride=2, padding=1)
        if downsample
        else nn.Conv2d(in_channels, dim, kernel_size=1)
    )
    nn.init.xavier_uniform_(conv.weight, gain=1)
    assert conv.bias is not None
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.GroupNorm(groups, dim))


def _predict_zeros(head: MLP) -> None:
    """Start a box-delta head at zero (DINO's init: the first boxes are the anchors)."""
    last = head.layers[-1]
    assert isinstance(last, nn.Linear)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)


def top_detections(
    pred_logits: Tensor, pred_boxes: Tensor, sizes: Tensor, num_select: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``num_select`` best (query, class) pairs of each image by sigmoid score ->
    ``(boxes xyxy px [B,k,4], scores [B,k], labels [B,k])``; ``sizes`` ``[B,2]`` is the
    (height, width) the relative boxes are scaled to."""
    batch, queries, classes = pred_logits.shape
    k = min(num_select, queries * classes)
    scores, flat = pred_logits.sigmoid().reshape(batch, -1).topk(k, dim=1)
    query = torch.div(flat, classes, rounding_mode="floor")
    labels = flat % classes
    boxes = torch.gather(
        box_convert(pred_boxes, "cxcywh", "xyxy"), 1, query[..., None].expand(-1, -1, 4)
    )
    height, width = sizes.to(pred_boxes.dtype).unbind(1)
    scale = torch.stack([width, height, width, height], dim=1)[:, None, :]
    return boxes * scale, scores, labels


class DINO(nn.Module):
    """DINO (Zhang et al., 2022). ``forward(batch)`` with ``batch["image"]`` ``[B,3,H,W]``
    (normalized) and optional ``batch["mask"]`` (True = padding) returns ``pred_logits``
    ``[B,Q,num_classes]`` (before sigmoid), ``pred_boxes`` ``[B,Q,4]`` (cx, cy, w, h relative
    to the unpadded image), ``aux_outputs`` (earlier decoder layers) and
    ``interm_outputs`` (the selected encoder proposals). In training mode with
    ``batch["target"]`` it also builds contrastive denoising queries and returns their
    predictions under ``dn_outputs`` with the layout in ``dn_meta``.

    ``category_ids[i]`` / ``class_names[i]`` describe class index ``i``.
    """

    def __init__(
        self,
        backbone: ResNetBackbone,
        position_encoding: SinePositionEncoding,
        transformer: DeformableTransformer,
        *,
        num_classes: int,
        num_feature_levels: int,
        group_norm_groups: int = 32,
        dn_number: int = 100,
        dn_label_noise_ratio: float = 0.5,
        dn_box_noise_scale: float = 1.0,
        dn_labelbook_size: int | None = None,
        num_select: int = 300,
        category_ids: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        dim = transformer.tgt_embed.embedding_dim
        self.backbone = backbone
        self.position_encoding = position_encoding
        self.transformer = transformer
        channels = list(backbone.num_channels)
        projections = [_projection(c, dim, group_norm_groups, downsample=False) for c in channels]
        in_channels = channels[-1]
        for _ in range(num_feature_levels - len(channels)):
            projections.append(_projection(in_channels, dim, group_norm_groups, downsample=True))
            in_channels = dim
        self.input_proj = nn.ModuleList(projections)
        self.class_embed = nn.Linear(dim, num_classes)
        self.bbox_embed = MLP(dim, dim, 4, 3)
        self.label_enc = nn.Embedding((dn_labelbook_size or num_classes) + 1, dim)
        bias = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        for head in (self.class_embed, transformer.enc_out_class_embed):
            nn.init.constant_(head.bias, bias)
        for box_head in (self.bbox_embed, transformer.enc_out_bbox_embed):
            _predict_zeros(box_head)
        self.num_classes = num_classes
        self.num_queries = transformer.num_queries
        self.dn_number = dn_number
        self.dn_label_noise_ratio = dn_label_noise_ratio
        self.dn_box_noise_scale = dn_box_noise_scale
        self.num_select = num_select
        self.weights_report: WeightsReport | None = None
        """What loading ``weights`` kept (set by the builder)."""
        self.category_ids = (
            list(category_ids) if category_ids is not None else list(range(num_classes))
        )
        self.class_names = (
            list(class_names) if class_names is not None else [str(c) for c in self.category_ids]
        )

    def _levels(
        self, images: Tensor, mask: Tensor
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Projected feature maps, their padding masks and sine positions, per level."""
        srcs, masks, positions = [], [], []
        features = self.backbone(images, mask)
        for level, (feature, level_mask) in enumerate(features):
            srcs.append(self.input_proj[level](feature))
            masks.append(level_mask)
        last = features[-1][0]
        for level in range(len(features), len(self.input_proj)):
            src = self.input_proj[level](last if level == len(features) else srcs[-1])
            level_mask = F.interpolate(mask[None].to(src.dtype), size=src.shape[-2:]).to(
                torch.bool
            )[0]
            srcs.append(src)
            masks.append(level_mask)
        positions = [self.position_encoding(m, s.dtype) for s, m in zip(srcs, masks, strict=True)]
        return srcs, masks, positions

    def predict_raw(
        self, images: Tensor, mask: Tensor, denoising: DenoisingQueries | None = None
    ) -> dict[str, Any]:
        """Logits and boxes of every decoder layer (``[L,B,pad+Q,...]``) and of the selected
        encoder proposals."""
        srcs, masks, positions = self._levels(images, mask)
        out = self.transformer(
            srcs,
            masks,
            positions,
            self.bbox_embed,
            denoising.content if denoising is not None else None,
            denoising.anchors if denoising is not None else None,
            denoising.attn_mask if denoising is not None else None,
        )
        # keeps label_enc in the graph when a batch has no denoising (DDP needs every param)
        hidden = [out.hidden[0] + self.label_enc.weight[0, 0] * 0.0, *out.hidden[1:]]
        boxes = torch.stack(
            [
                (self.bbox_embed(h) + inverse_sigmoid(ref)).sigmoid()
                for ref, h in zip(out.references[:-1], hidden, strict=True)
            ]
        )
        logits = torch.stack([self.class_embed(h) for h in hidden])
        return {
            "logits": logits,
            "boxes": boxes,
            "encoder_logits": self.transformer.enc_out_class_embed(out.encoder_hidden),
            "encoder_boxes": out.encoder_boxes,
        }

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        images = plain_images(batch)
        mask = padding_mask(batch, images)
        denoising = None
        if self.training and self.dn_number > 0 and batch.get("target") is not None:
            targets = normalize_targets(batch["target"], images.dtype, images.device)
            denoising = denoising_queries(
                targets,
                dn_number=self.dn_number,
                label_noise_ratio=self.dn_label_noise_ratio,
                box_noise_scale=self.dn_box_noise_scale,
                num_classes=self.num_classes,
                num_queries=self.num_queries,
                label_embedding=self.label_enc,
            )
        raw = self.predict_raw(images, mask, denoising)
        logits, boxes = raw["logits"], raw["boxes"]
        out: dict[str, Any] = {}
        if denoising is not None:
            pad = denoising.pad
            out["dn_outputs"] = _layer_dicts(logits[:, :, :pad], boxes[:, :, :pad])
            out["dn_meta"] = {"groups": denoising.groups, "max_objects": denoising.max_objects}
            logits, boxes = logits[:, :, pad:], boxes[:, :, pad:]
        layers = _layer_dicts(logits, boxes)
        out.update(layers[-1])
        out["aux_outputs"] = layers[:-1]
        out["interm_outputs"] = {
            "pred_logits": raw["encoder_logits"],
            "pred_boxes": raw["encoder_boxes"],
        }
        return out

    @torch.no_grad()
    def postprocess(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """The ``num_select`` best detections of each image: ``{"boxes" xyxy px, "scores",
        "labels"}``, boxes in the pixels of each target's ``orig_size`` (else of the
        unpadded image in the batch)."""
        sizes = image_sizes(batch, plain_images(batch))
        boxes, scores, labels = top_detections(
            outputs["pred_logits"], outputs["pred_boxes"], sizes, self.num_select
        )
        return [
            {"boxes": b, "scores": s, "labels": lab}
            for b, s, lab in zip(boxes, scores, labels, strict=True)
        ]

    def export_module(self) -> nn.Module:
        """``image [B,3,H,W] -> {"boxes" [B,k,4] xyxy px of that image, "scores" [B,k],
        "labels" [B,k]}`` for ONNX (the keys name the graph's outputs); any H, W (nothing
        depends on a fixed size)."""
        return DinoInferenceGraph(self)


def _layer_dicts(logits: Tensor, boxes: Tensor) -> list[dict[str, Tensor]]:
    return [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits, boxes, strict=True)]


class DinoInferenceGraph(nn.Module):
    """The tensor-in, tensor-out DINO used for export: unpadded images, top-k detections."""

    def __init__(self, dino: DINO) -> None:
        super().__init__()
        self.dino = dino

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        mask = torch.zeros_like(image[:, 0], dtype=torch.bool)
        raw = self.dino.predict_raw(image, mask)
        height, width = image.shape[-2:]
        sizes = torch.tensor([[height, width]], device=image.device).expand(image.shape[0], 2)
        return detection_outputs(
            *top_detections(raw["logits"][-1], raw["boxes"][-1], sizes, self.dino.num_select)
        )
