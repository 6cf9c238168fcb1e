"""Pure PyTorch multi-scale deformable attention (the ``pytorch`` backend).

Built on :func:`torch.nn.functional.grid_sample`, so it runs on every device, is
differentiable through autograd, traces under ``torch.compile`` and exports to ONNX
(``GridSample``). The compiled kernels are tested against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention by bilinear ``grid_sample`` per level.

    Shapes: value ``[B, S, heads, dim]`` with ``S = sum(h * w)``, sampling_locations
    ``[B, Q, heads, levels, points, 2]`` as normalized ``(x, y)``, attention_weights
    ``[B, Q, heads, levels, points]``; returns ``[B, Q, heads * dim]`` in value's dtype.
    Computes in the promoted dtype of value and locations (fp32 locations keep a bf16
    value's samples on the right pixel).
    """
    out_dtype = value.dtype
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    value = value.to(dtype)
    batch, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    # grid_sample takes coordinates in [-1, 1]; align_corners=False maps them to pixel edges.
    grids = (2 * sampling_locations - 1).to(dtype)
    sampled = []
    for level, (height, width) in enumerate(spatial_shapes):
        # [B, h*w, heads, dim] -> [B*heads, dim, h, w]
        level_value = per_level[level].permute(0, 2, 3, 1)
        level_value = level_value.reshape(batch * heads, dim, height, width)
        # [B, Q, heads, points, 2] -> [B*heads, Q, points, 2]
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(
            F.grid_sample(
                level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
        )
    # [B*heads, dim, Q, levels*points]
    stacked = torch.stack(sampled, dim=-2).flatten(-2)
    weights = (
        attention_weights.to(dtype)
        .transpose(1, 2)
        .reshape(batch * heads, 1, queries, levels * points)
    )
    output = (stacked * weights).sum(-1).view(batch, heads * dim, queries)
    return output.transpose(1, 2).contiguous().to(out_dtype)
