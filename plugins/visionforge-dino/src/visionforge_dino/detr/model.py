"""The DETR detector: ``model(batch)`` -> ``pred_logits`` / ``pred_boxes`` (+ ``aux_outputs``),
``postprocess`` -> per-image detections, ``export_module`` -> the tensor-only graph."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert

from visionforge_dino.detr.backbone import ResNetBackbone
from visionforge_dino.detr.position_encoding import SinePositionEncoding
from visionforge_dino.detr.transformer import DetrTransformer
from visionforge_dino.detr.weights import WeightsReport


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (DETR's box head)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(dims, outs, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def plain_images(batch: Mapping[str, Any]) -> torch.Tensor:
    """``batch["image"]`` as a plain tensor (tv_tensors.Image unwrapped)."""
    images = batch["image"]
    return images if type(images) is torch.Tensor else images.as_subclass(torch.Tensor)


def padding_mask(batch: Mapping[str, Any], images: torch.Tensor) -> torch.Tensor:
    """``batch["mask"]`` (True = padding), or all-valid when the batch has none."""
    mask = batch.get("mask")
    if mask is None:
        return torch.zeros(
            images.shape[0], *images.shape[-2:], dtype=torch.bool, device=images.device
        )
    return mask.to(device=images.device, dtype=torch.bool)


def image_sizes(batch: Mapping[str, Any], images: torch.Tensor) -> torch.Tensor:
    """``[B, 2]`` (height, width) that relative boxes are scaled to: each target's
    ``orig_size`` (the image on disk), else the unpadded size in the batch."""
    targets: Sequence[Mapping[str, Any]] | None = batch.get("target")
    if targets is not None and all("orig_size" in t for t in targets):
        return torch.stack([torch.as_tensor(t["orig_size"]).reshape(2) for t in targets]).to(
            images.device
        )
    valid = ~padding_mask(batch, images)
    return torch.stack([valid.any(2).sum(1), valid.any(1).sum(1)], dim=1)


def detections_from_logits(
    pred_logits: torch.Tensor, pred_boxes: torch.Tensor, sizes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax without the no-object class -> ``(boxes xyxy px [B,Q,4], scores, labels)``;
    ``sizes`` is ``[B, 2]`` (height, width) of the images the boxes are scaled to."""
    scores, labels = pred_logits.softmax(-1)[..., :-1].max(-1)
    height, width = sizes.to(pred_boxes.dtype).unbind(1)
    scale = torch.stack([width, height, width, height], dim=1)[:, None, :]
    return box_convert(pred_boxes, "cxcywh", "xyxy") * scale, scores, labels


def detection_outputs(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """An inference graph's outputs by name: the ONNX exporter names the graph's outputs
    after these keys (``boxes``, ``scores``, ``labels``), in this order."""
    return {"boxes": boxes, "scores": scores, "labels": labels}


class DETR(nn.Module):
    """DETR (Carion et al., 2020). ``forward(batch)`` with ``batch["image"]`` ``[B,3,H,W]``
    (normalized) and optional ``batch["mask"]`` ``Bool[B,H,W]`` (True = padding) returns
    ``pred_logits`` ``[B,Q,num_classes+1]`` (last = no-object, before softmax),
    ``pred_boxes`` ``[B,Q,4]`` (cx, cy, w, h relative to the unpadded image) and, with
    ``aux_loss``, ``aux_outputs`` (the same for each earlier decoder layer).

    ``class_names[i]`` names class index ``i``. With ``category_ids`` (the official COCO
    weights: index ``i`` is COCO category ``i``) the model is ``CategoryMapped`` and
    evaluation maps its labels into the dataset's; without, its labels are the dataset's.
    """

    def __init__(
        self,
        backbone: ResNetBackbone,
        position_encoding: SinePositionEncoding,
        transformer: DetrTransformer,
        *,
        num_classes: int,
        num_queries: int = 100,
        aux_loss: bool = True,
        category_ids: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        hidden_dim = transformer.d_model
        self.backbone = backbone
        self.position_encoding = position_encoding
        self.transformer = transformer
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = nn.Conv2d(backbone.num_channels[-1], hidden_dim, kernel_size=1)
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.aux_loss = aux_loss
        self.weights_report: WeightsReport | None = None
        """What loading ``weights`` kept (set by the builder)."""
        self.class_names = (
            list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        )
        if category_ids is not None:  # a CategoryMapped model: evaluation maps through them
            self.category_ids = list(category_ids)

    def predict_raw(
        self, images: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every decoder layer's ``(logits [L,B,Q,K+1], boxes [L,B,Q,4])``."""
        features, feature_mask = self.backbone(images, mask)[-1]
        pos = self.position_encoding(feature_mask, features.dtype)
        hidden = self.transformer(
            self.input_proj(features), feature_mask, self.query_embed.weight, pos
        )
        return self.class_embed(hidden), self.bbox_embed(hidden).sigmoid()

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        images = plain_images(batch)
        logits, boxes = self.predict_raw(images, padding_mask(batch, images))
        out: dict[str, Any] = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": a, "pred_boxes": b}
                for a, b in zip(logits[:-1], boxes[:-1], strict=True)
            ]
        return out

    @torch.no_grad()
    def postprocess(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """One ``{"boxes" xyxy px, "scores", "labels"}`` per image, every query (no-object
        dropped by taking the best real class); boxes in the pixels of each target's
        ``orig_size`` (else of the unpadded image in the batch)."""
        sizes = image_sizes(batch, plain_images(batch))
        boxes, scores, labels = detections_from_logits(
            outputs["pred_logits"], outputs["pred_boxes"], sizes
        )
        return [
            {"boxes": b, "scores": s, "labels": lab}
            for b, s, lab in zip(boxes, scores, labels, strict=True)
        ]

    def export_module(self) -> nn.Module:
        """``image [B,3,H,W] -> {"boxes" [B,Q,4] xyxy px of that image, "scores" [B,Q],
        "labels" [B,Q]}``, for ONNX (the keys name the graph's outputs; any H, W: nothing
        depends on a fixed size)."""
        return DetrInferenceGraph(self)


class DetrInferenceGraph(nn.Module):
    """The tensor-in, tensor-out DETR used for export: unpadded images, every query."""

    def __init__(self, detr: DETR) -> None:
        super().__init__()
        self.detr = detr

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = torch.zeros_like(image[:, 0], dtype=torch.bool)
        logits, boxes = self.detr.predict_raw(image, mask)
        height, width = image.shape[-2:]
        ones = torch.ones_like(image[:, 0, 0, :1])  # [B, 1]: no batch size baked into the graph
        sizes = torch.cat([ones * height, ones * width], dim=1)
        return detection_outputs(*detections_from_logits(logits[-1], boxes[-1], sizes))
