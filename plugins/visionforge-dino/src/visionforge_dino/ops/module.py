"""``MultiScaleDeformableAttention``: the attention layer of Deformable DETR and DINO."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from visionforge.errors import ConfigError
from visionforge_dino.ops.errors import MSDAInputError
from visionforge_dino.ops.functional import (
    SpatialShapes,
    level_tensors,
    multi_scale_deformable_attention,
)


class MultiScaleDeformableAttention(nn.Module):
    """Each query attends to ``num_points`` learned locations per head and level around its
    reference point.

    Projections: ``sampling_offsets`` and ``attention_weights`` from the query,
    ``value_proj`` on the flattened multi-scale features, ``output_proj`` on the result.
    Tensors are batch first. The attention itself is
    :func:`~visionforge_dino.ops.multi_scale_deformable_attention` (compiled kernel when
    available).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        *,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        for name, number in (
            ("embed_dim", embed_dim),
            ("num_heads", num_heads),
            ("num_levels", num_levels),
            ("num_points", num_points),
        ):
            if number < 1:
                raise ConfigError(f"MultiScaleDeformableAttention: {name}={number} must be >= 1")
        if embed_dim % num_heads:
            raise ConfigError(
                f"MultiScaleDeformableAttention: embed_dim={embed_dim} is not divisible by "
                f"num_heads={num_heads}; pick a head count that divides it"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.backend = backend
        samples = num_heads * num_levels * num_points
        self.sampling_offsets = nn.Linear(embed_dim, samples * 2)
        self.attention_weights = nn.Linear(embed_dim, samples)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialization: offsets start on a ring, one direction per head
        (point k at distance k + 1), uniform attention, Xavier value/output projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float64) * (2 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        # Scale so the larger coordinate is 1: the first point lands on a neighbouring pixel.
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        distances = torch.arange(1, self.num_points + 1, dtype=torch.float64)
        ring = directions[:, None, None, :] * distances[None, None, :, None]
        ring = ring.expand(self.num_heads, self.num_levels, self.num_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(ring.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        spatial_shapes: SpatialShapes,
        level_start_index: Tensor | Sequence[int] | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend from ``query`` ``[B, Q, C]`` to ``value`` ``[B, S, C]``.

        ``reference_points`` ``[B, Q, levels, 2]`` are normalized ``(x, y)`` centers, or
        ``[B, Q, levels, 4]`` boxes ``(cx, cy, w, h)`` whose size scales the offsets.
        ``key_padding_mask`` ``[B, S]`` is True at padded keys, which then contribute zero.
        Returns ``[B, Q, C]``.
        """
        batch, queries, _ = query.shape
        keys = value.shape[1]
        if query.shape[-1] != self.embed_dim or value.shape[-1] != self.embed_dim:
            raise MSDAInputError(
                f"MultiScaleDeformableAttention: query {tuple(query.shape)} and value "
                f"{tuple(value.shape)} must end in embed_dim={self.embed_dim}"
            )
        if (
            reference_points.dim() != 4
            or reference_points.shape[-1] not in (2, 4)
            or tuple(reference_points.shape[:3]) != (batch, queries, self.num_levels)
        ):
            raise MSDAInputError(
                f"MultiScaleDeformableAttention: reference_points {tuple(reference_points.shape)}"
                f" must be [B={batch}, Q={queries}, levels={self.num_levels}, 2 or 4]"
            )
        projected = self.value_proj(value)
        if key_padding_mask is not None:
            if tuple(key_padding_mask.shape) != (batch, keys):
                raise MSDAInputError(
                    f"MultiScaleDeformableAttention: key_padding_mask "
                    f"{tuple(key_padding_mask.shape)} must be [B={batch}, S={keys}]"
                )
            projected = projected.masked_fill(key_padding_mask[..., None], 0.0)
        head_dim = self.embed_dim // self.num_heads
        projected = projected.view(batch, keys, self.num_heads, head_dim)

        sample_shape = (batch, queries, self.num_heads, self.num_levels, self.num_points)
        offsets = self.sampling_offsets(query).view(*sample_shape, 2)
        weights = self.attention_weights(query).view(*sample_shape[:3], -1).softmax(-1)
        weights = weights.view(sample_shape)

        if reference_points.shape[-1] == 2:
            shapes, _ = level_tensors(spatial_shapes, query.device)
            # offsets are in pixels of each level: normalize by (w, h)
            normalizer = shapes.flip(-1).to(offsets.dtype)
            locations = (
                reference_points[:, :, None, :, None, :]
                + offsets / normalizer[None, None, None, :, None, :]
            )
        else:
            centers = reference_points[:, :, None, :, None, :2]
            sizes = reference_points[:, :, None, :, None, 2:]
            locations = centers + offsets / self.num_points * sizes * 0.5

        attended = multi_scale_deformable_attention(
            projected,
            spatial_shapes,
            level_start_index,
            locations,
            weights,
            backend=self.backend,
        )
        output: Tensor = self.output_proj(attended)
        return output

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"num_levels={self.num_levels}, num_points={self.num_points}"
        )
