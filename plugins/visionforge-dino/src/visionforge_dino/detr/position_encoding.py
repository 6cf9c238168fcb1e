"""Sine position encoding of a padded feature map (DETR's ``PositionEmbeddingSine``)."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinePositionEncoding(nn.Module):
    """``forward(mask, dtype) -> Tensor[B, 2*num_pos_feats, H, W]`` (y features, then x).

    Positions count valid (unpadded) pixels; with ``normalize`` they are scaled to
    ``(0, scale]`` per image, after adding ``offset`` (DETR: 0; Deformable DETR/DINO: -0.5).
    Computed in ``dtype`` (at least float32 precision), so float64 models stay float64.
    """

    def __init__(
        self,
        num_pos_feats: int = 128,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float = 2 * math.pi,
        offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.offset = offset

    def forward(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        compute = torch.promote_types(dtype, torch.float32)
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=compute)
        x_embed = not_mask.cumsum(2, dtype=compute)
        if self.normalize:
            eps = 1e-6
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=compute, device=mask.device)
        dim_t = self.temperature ** (
            2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats
        )
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).to(dtype)
