"""DINO's deformable transformer: encoder, mixed query selection, and a decoder that refines
4-d anchor boxes layer by layer.

Tensors are batch first (``[B, tokens, C]``). Everything is computed in the dtype of the
inputs, so a ``.double()`` model stays float64 end to end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionforge_dino.detr.model import MLP
from visionforge_dino.ops import MultiScaleDeformableAttention


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    """``log(x / (1 - x))`` with both terms floored at ``eps`` (the original's formula), for
    ``x`` in ``[0, 1]`` (sigmoid outputs and clamped boxes are). The original also clamps
    ``x`` to ``[0, 1]`` first, a no-op on such inputs that torch.onnx's optimizer turns into
    an invalid graph."""
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def box_sine_embedding(boxes: Tensor, dim_per_coord: int, temperature: float = 10000.0) -> Tensor:
    """Sine features of ``(cx, cy, w, h)`` boxes ``[..., 4]`` -> ``[..., 4 * dim_per_coord]``
    in the order y, x, w, h (as DINO's decoder feeds its ``ref_point_head``)."""
    dim_t = torch.arange(dim_per_coord, dtype=boxes.dtype, device=boxes.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / dim_per_coord)
    parts = []
    for coord in (1, 0, 2, 3):
        angles = boxes[..., coord, None] * (2 * math.pi) / dim_t
        parts.append(
            torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), -1).flatten(-2)
        )
    return torch.cat(parts, dim=-1)


def valid_ratios(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``[B, 2]`` share of each image's width and height that is not padding."""
    _, height, width = mask.shape
    valid_h = (~mask[:, :, 0]).sum(1).to(dtype) / height
    valid_w = (~mask[:, 0, :]).sum(1).to(dtype) / width
    return torch.stack([valid_w, valid_h], -1)


def encoder_reference_points(spatial_shapes: Sequence[tuple[int, int]], ratios: Tensor) -> Tensor:
    """Pixel centres of every level, normalized to the valid area: ``[B, S, levels, 2]``."""
    points = []
    for level, (height, width) in enumerate(spatial_shapes):
        ys = torch.linspace(0.5, height - 0.5, height, dtype=ratios.dtype, device=ratios.device)
        xs = torch.linspace(0.5, width - 0.5, width, dtype=ratios.dtype, device=ratios.device)
        ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
        ref_y = ref_y.reshape(-1)[None] / (ratios[:, None, level, 1] * height)
        ref_x = ref_x.reshape(-1)[None] / (ratios[:, None, level, 0] * width)
        points.append(torch.stack((ref_x, ref_y), -1))
    reference = torch.cat(points, 1)
    return reference[:, :, None] * ratios[:, None]


def encoder_proposals(
    memory: Tensor, padding: Tensor, spatial_shapes: Sequence[tuple[int, int]]
) -> tuple[Tensor, Tensor]:
    """One anchor per encoder token (its pixel centre, side ``0.05 * 2**level``), in logit
    space, ``inf`` where padded or too close to the border; the memory zeroed there."""
    batch = memory.shape[0]
    proposals = []
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        level_mask = padding[:, start : start + height * width].view(batch, height, width)
        valid_h = (~level_mask[:, :, 0]).sum(1)
        valid_w = (~level_mask[:, 0, :]).sum(1)
        ys = torch.linspace(0, height - 1, height, dtype=memory.dtype, device=memory.device)
        xs = torch.linspace(0, width - 1, width, dtype=memory.dtype, device=memory.device)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([grid_x, grid_y], -1)
        scale = torch.stack([valid_w, valid_h], 1).view(batch, 1, 1, 2).to(memory.dtype)
        grid = (grid[None].expand(batch, -1, -1, -1) + 0.5) / scale
        side = torch.full_like(grid, 0.05 * (2.0**level))
        proposals.append(torch.cat((grid, side), -1).view(batch, -1, 4))
        start += height * width
    anchors = torch.cat(proposals, 1)
    valid = ((anchors > 0.01) & (anchors < 0.99)).all(-1, keepdim=True)
    anchors = torch.log(anchors / (1 - anchors))
    anchors = anchors.masked_fill(padding[..., None], float("inf"))
    anchors = anchors.masked_fill(~valid, float("inf"))
    memory = memory.masked_fill(padding[..., None], 0.0).masked_fill(~valid, 0.0)
    return memory, anchors


@dataclass
class LevelLayout:
    """Where each feature level lies in the flattened token sequence."""

    shapes: list[tuple[int, int]]
    starts: Tensor

    @classmethod
    def of(cls, shapes: list[tuple[int, int]], device: torch.device) -> LevelLayout:
        sizes = [h * w for h, w in shapes]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return cls(shapes, torch.tensor(starts, dtype=torch.long, device=device))


class EncoderLayer(nn.Module):
    """Deformable self-attention over all levels, then a ReLU FFN (post-norm)."""

    def __init__(
        self,
        dim: int,
        ffn: int,
        dropout: float,
        levels: int,
        heads: int,
        points: int,
        backend: str | None,
    ) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(dim, heads, levels, points, backend=backend)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn, dim)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        reference: Tensor,
        layout: LevelLayout,
        padding: Tensor,
        keep: Tensor | None = None,
    ) -> Tensor:
        """``keep``: flat indices (into ``B * S``) of the tokens the FFN runs on; the others
        pass it by."""
        attended = self.self_attn(src + pos, reference, src, layout.shapes, layout.starts, padding)
        src = self.norm1(src + self.dropout1(attended))
        if keep is None:
            return self._ffn(src)
        flat = src.flatten(0, 1)
        return flat.index_copy(0, keep, self._ffn(flat.index_select(0, keep))).view_as(src)

    def _ffn(self, src: Tensor) -> Tensor:
        hidden = self.linear2(self.dropout2(F.relu(self.linear1(src), inplace=True)))
        return self.norm2(src + self.dropout3(hidden))


class Encoder(nn.Module):
    """The deformable encoder: each layer attends from every token to every level.

    Tokens under padding are dead ends: attention reads them as zero (the key padding mask)
    and the query selection zeroes them, so only tokens attending *from* padding would see
    them. With ``skip_padded_tokens`` their FFN is skipped (a quarter of the encoder's FFN
    work in a batch whose second image covers 3/4 x 3/4 of the canvas), which changes no
    output outside the padding. Exports (``torch.compiler.is_compiling()``) run every token.
    """

    def __init__(self, layers: list[EncoderLayer], skip_padded_tokens: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.skip_padded_tokens = skip_padded_tokens

    def forward(
        self, src: Tensor, pos: Tensor, reference: Tensor, layout: LevelLayout, padding: Tensor
    ) -> Tensor:
        keep = None
        if self.skip_padded_tokens and not torch.compiler.is_compiling() and bool(padding.any()):
            keep = (~padding).flatten().nonzero().squeeze(1)
        for layer in self.layers:
            src = layer(src, pos, reference, layout, padding, keep)
        return src


class DecoderLayer(nn.Module):
    """Self-attention among queries (with the denoising mask), deformable cross-attention
    into the memory around each query's anchor box, then a ReLU FFN (post-norm)."""

    def __init__(
        self,
        dim: int,
        ffn: int,
        dropout: float,
        levels: int,
        heads: int,
        points: int,
        backend: str | None,
    ) -> None:
        super().__init__()
        self.cross_attn = MultiScaleDeformableAttention(dim, heads, levels, points, backend=backend)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn, dim)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        reference: Tensor,
        memory: Tensor,
        layout: LevelLayout,
        padding: Tensor,
        attn_mask: Tensor | None,
    ) -> Tensor:
        q = k = tgt + query_pos
        attended = self.self_attn(q, k, tgt, attn_mask=attn_mask, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        crossed = self.cross_attn(
            tgt + query_pos, reference, memory, layout.shapes, layout.starts, padding
        )
        tgt = self.norm1(tgt + self.dropout1(crossed))
        hidden = self.linear2(self.dropout3(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(hidden))


class Decoder(nn.Module):
    """Refines anchors layer by layer: each layer's box head predicts a delta on its input
    anchor; the next layer starts from the detached result ("look forward twice": the
    returned references keep their gradient for the loss)."""

    def __init__(self, layers: list[DecoderLayer], dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(dim)
        self.ref_point_head = MLP(2 * dim, dim, dim, 2)
        self.dim = dim

    def forward(
        self,
        tgt: Tensor,
        anchors_logit: Tensor,
        memory: Tensor,
        padding: Tensor,
        layout: LevelLayout,
        ratios: Tensor,
        attn_mask: Tensor | None,
        box_head: nn.Module,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Returns the normed hidden states of every layer and the anchors (sigmoid space)
        before each layer plus after the last."""
        reference = anchors_logit.sigmoid()
        references = [reference]
        hidden_states = []
        scale = torch.cat([ratios, ratios], -1)[:, None]
        output = tgt
        for layer in self.layers:
            reference_input = reference[:, :, None] * scale
            sine = box_sine_embedding(reference_input[:, :, 0, :], self.dim // 2)
            query_pos = self.ref_point_head(sine)
            output = layer(output, query_pos, reference_input, memory, layout, padding, attn_mask)
            refined = (box_head(output) + inverse_sigmoid(reference)).sigmoid()
            reference = refined.detach()
            references.append(refined)
            hidden_states.append(self.norm(output))
        return hidden_states, references


@dataclass
class TransformerOutput:
    """``hidden``/``references`` per decoder layer; ``encoder_hidden``/``encoder_boxes`` of the
    selected proposals (the encoder loss's predictions)."""

    hidden: list[Tensor]
    references: list[Tensor]
    encoder_hidden: Tensor
    encoder_boxes: Tensor


class DeformableTransformer(nn.Module):
    """Deformable encoder, then mixed query selection: the top-``num_queries`` encoder tokens
    (scored by ``enc_out_class_embed``) give the anchors, while the content queries are
    learned (``tgt_embed``); the decoder refines them."""

    def __init__(
        self,
        *,
        dim: int,
        heads: int,
        enc_layers: int,
        dec_layers: int,
        ffn: int,
        dropout: float,
        levels: int,
        enc_points: int,
        dec_points: int,
        num_queries: int,
        num_classes: int,
        backend: str | None,
    ) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.encoder = Encoder(
            [
                EncoderLayer(dim, ffn, dropout, levels, heads, enc_points, backend)
                for _ in range(enc_layers)
            ]
        )
        self.decoder = Decoder(
            [
                DecoderLayer(dim, ffn, dropout, levels, heads, dec_points, backend)
                for _ in range(dec_layers)
            ],
            dim,
        )
        self.level_embed = nn.Parameter(torch.empty(levels, dim))
        self.tgt_embed = nn.Embedding(num_queries, dim)
        self.enc_output = nn.Linear(dim, dim)
        self.enc_output_norm = nn.LayerNorm(dim)
        self.enc_out_class_embed = nn.Linear(dim, num_classes)
        self.enc_out_bbox_embed = MLP(dim, dim, 4, 3)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
        for module in self.modules():
            if isinstance(module, MultiScaleDeformableAttention):
                module.reset_parameters()
        nn.init.normal_(self.level_embed)
        nn.init.normal_(self.tgt_embed.weight)

    def forward(
        self,
        srcs: list[Tensor],
        masks: list[Tensor],
        positions: list[Tensor],
        box_head: nn.Module,
        denoising_content: Tensor | None = None,
        denoising_anchors: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> TransformerOutput:
        shapes = [(int(s.shape[-2]), int(s.shape[-1])) for s in srcs]
        layout = LevelLayout.of(shapes, srcs[0].device)
        tokens = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        padding = torch.cat([m.flatten(1) for m in masks], 1)
        pos = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[level].view(1, 1, -1)
                for level, p in enumerate(positions)
            ],
            1,
        )
        ratios = torch.stack([valid_ratios(m, tokens.dtype) for m in masks], 1)

        reference = encoder_reference_points(shapes, ratios)
        memory = self.encoder(tokens, pos, reference, layout, padding)

        proposal_memory, anchors = encoder_proposals(memory, padding, shapes)
        proposal_memory = self.enc_output_norm(self.enc_output(proposal_memory))
        scores = self.enc_out_class_embed(proposal_memory).max(-1).values
        if scores.shape[1] < self.num_queries:
            raise ValueError(
                f"DINO: the feature maps {shapes} give {scores.shape[1]} encoder tokens, fewer "
                f"than num_queries={self.num_queries}; use larger images or fewer queries"
            )
        topk = torch.topk(scores, self.num_queries, dim=1).indices
        selected_memory = torch.gather(
            proposal_memory, 1, topk[..., None].expand(-1, -1, proposal_memory.shape[-1])
        )
        # the box head is per token: run it on the selected proposals only, not on all
        selected_anchors = torch.gather(anchors, 1, topk[..., None].expand(-1, -1, 4))
        selected_boxes = self.enc_out_bbox_embed(selected_memory) + selected_anchors
        batch = tokens.shape[0]
        content = self.tgt_embed.weight[None].expand(batch, -1, -1)
        anchors_logit = selected_boxes.detach()
        if denoising_content is not None and denoising_anchors is not None:
            content = torch.cat([denoising_content, content], 1)
            anchors_logit = torch.cat([denoising_anchors, anchors_logit], 1)
        hidden, references = self.decoder(
            content, anchors_logit, memory, padding, layout, ratios, attn_mask, box_head
        )
        return TransformerOutput(
            hidden=hidden,
            references=references,
            encoder_hidden=selected_memory,
            encoder_boxes=selected_boxes.sigmoid(),
        )
