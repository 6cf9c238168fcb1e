"""``multi_scale_deformable_attention``: checks the inputs and runs the chosen backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor

from visionforge_dino.ops.backends import select_backend
from visionforge_dino.ops.errors import MSDAInputError
from visionforge_dino.ops.reference import ms_deform_attn_pytorch

SpatialShapes = Tensor | Sequence[tuple[int, int]] | Sequence[Sequence[int]]

_LAYOUT = (
    "expected value [B, S, heads, dim], sampling_locations [B, Q, heads, levels, points, 2], "
    "attention_weights [B, Q, heads, levels, points], spatial_shapes [levels, 2] as (h, w)"
)


def _fail(problem: str) -> MSDAInputError:
    return MSDAInputError(f"multi_scale_deformable_attention: {problem}; {_LAYOUT}")


def _static_shapes(spatial_shapes: SpatialShapes) -> list[tuple[int, int]] | None:
    """The level shapes as Python ints when that costs no device sync or graph break."""
    if isinstance(spatial_shapes, Tensor):
        if spatial_shapes.device.type != "cpu" or torch.compiler.is_compiling():
            return None
        rows = spatial_shapes.tolist()
    else:
        rows = [list(row) for row in spatial_shapes]
    if any(len(row) != 2 for row in rows):
        raise _fail(f"spatial_shapes must hold (h, w) pairs, got {rows}")
    return [(int(h), int(w)) for h, w in rows]


def _check(
    value: Tensor,
    spatial_shapes: SpatialShapes,
    shapes: list[tuple[int, int]] | None,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> None:
    if value.dim() != 4:
        raise _fail(f"value has shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise _fail(f"sampling_locations has shape {tuple(sampling_locations.shape)}")
    if tuple(attention_weights.shape) != tuple(sampling_locations.shape[:-1]):
        raise _fail(
            f"attention_weights {tuple(attention_weights.shape)} does not match "
            f"sampling_locations {tuple(sampling_locations.shape)}"
        )
    batch, keys, heads, _ = value.shape
    if sampling_locations.shape[0] != batch or sampling_locations.shape[2] != heads:
        raise _fail(
            f"sampling_locations {tuple(sampling_locations.shape)} has another batch size or "
            f"head count than value {tuple(value.shape)}"
        )
    for name, tensor in (
        ("value", value),
        ("sampling_locations", sampling_locations),
        ("attention_weights", attention_weights),
    ):
        if not tensor.is_floating_point():
            raise _fail(f"{name} must be floating point, got {tensor.dtype}")
        if tensor.device != value.device:
            raise _fail(f"{name} is on {tensor.device}, value on {value.device}")
    levels = sampling_locations.shape[3]
    if isinstance(spatial_shapes, Tensor) and tuple(spatial_shapes.shape) != (levels, 2):
        raise _fail(f"spatial_shapes has shape {tuple(spatial_shapes.shape)} for {levels} levels")
    if shapes is None:
        return
    if len(shapes) != levels:
        raise _fail(f"spatial_shapes lists {len(shapes)} levels, sampling_locations {levels}")
    if any(h < 1 or w < 1 for h, w in shapes):
        raise _fail(f"spatial_shapes {shapes} has an empty level")
    total = sum(h * w for h, w in shapes)
    if total != keys:
        raise _fail(f"spatial_shapes {shapes} cover {total} keys but value has S={keys}")


def _level_starts(shapes_tensor: Tensor) -> Tensor:
    sizes = shapes_tensor[:, 0] * shapes_tensor[:, 1]
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


def multi_scale_deformable_attention(
    value: Tensor,
    spatial_shapes: SpatialShapes,
    level_start_index: Tensor | Sequence[int] | None,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    *,
    backend: str | None = None,
) -> Tensor:
    """Multi-scale deformable attention (Deformable DETR), differentiable on every backend.

    ``value`` ``[B, S, heads, dim]`` holds the flattened levels (``S = sum(h * w)``);
    ``spatial_shapes`` gives each level's ``(h, w)`` (an int64 ``[levels, 2]`` tensor or a
    list of pairs; a list keeps ``torch.export``/ONNX graphs free of data-dependent shapes);
    ``level_start_index`` is each level's first key (computed when ``None``);
    ``sampling_locations`` ``[B, Q, heads, levels, points, 2]`` are normalized ``(x, y)``;
    ``attention_weights`` ``[B, Q, heads, levels, points]``. Bilinear sampling with zero
    padding and ``align_corners=False``, as ``grid_sample``. Returns ``[B, Q, heads * dim]``
    in value's dtype. ``backend`` ("auto", "cuda", "cpu", "pytorch") overrides
    ``$VISIONFORGE_MSDA_BACKEND``; ONNX export always uses the PyTorch formulation.
    """
    shapes = _static_shapes(spatial_shapes)
    _check(value, spatial_shapes, shapes, sampling_locations, attention_weights)
    if torch.onnx.is_in_onnx_export():
        chosen = "pytorch"
    else:
        chosen = select_backend(value.device.type, backend)
    if chosen == "pytorch":
        if shapes is None:
            shapes = [(int(h), int(w)) for h, w in cast(Tensor, spatial_shapes).tolist()]
        return ms_deform_attn_pytorch(value, shapes, sampling_locations, attention_weights)

    from visionforge_dino.ops.custom_op import ms_deform_attn

    shapes_tensor = torch.as_tensor(
        spatial_shapes if shapes is None else shapes, dtype=torch.long, device=value.device
    )
    if level_start_index is None:
        starts = _level_starts(shapes_tensor)
    else:
        starts = torch.as_tensor(level_start_index, dtype=torch.long, device=value.device)
    # Locations and weights stay in fp32 under fp16/bf16 values: a bf16 location is off by
    # up to half a pixel on a 100-pixel level.
    acc_dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
    return ms_deform_attn(
        value.contiguous(),
        shapes_tensor.contiguous(),
        starts.contiguous(),
        sampling_locations.to(acc_dtype).contiguous(),
        attention_weights.to(acc_dtype).contiguous(),
    )
