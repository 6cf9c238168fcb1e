"""``multi_scale_deformable_attention``: checks the inputs and runs the chosen backend."""

from __future__ import annotations

import functools
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


def _readable(tensor: Tensor, sync: bool) -> bool:
    """Whether reading ``tensor`` on the host is wanted: always with ``sync``, else only when it
    costs no device sync or graph break."""
    return sync or (tensor.device.type == "cpu" and not torch.compiler.is_compiling())


def _static_shapes(
    spatial_shapes: SpatialShapes, *, sync: bool = False
) -> list[tuple[int, int]] | None:
    """The level shapes as Python ints, or ``None`` when a tensor is not readable (above)."""
    if isinstance(spatial_shapes, Tensor):
        if not _readable(spatial_shapes, sync):
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
    if shapes is not None:
        _check_levels(shapes, levels, keys)


def _check_levels(shapes: list[tuple[int, int]], levels: int, keys: int) -> None:
    if len(shapes) != levels:
        raise _fail(f"spatial_shapes lists {len(shapes)} levels, sampling_locations {levels}")
    if any(h < 1 or w < 1 for h, w in shapes):
        raise _fail(f"spatial_shapes {shapes} has an empty level")
    total = sum(h * w for h, w in shapes)
    if total != keys:
        raise _fail(f"spatial_shapes {shapes} cover {total} keys but value has S={keys}")


def _static_starts(
    level_start_index: Tensor | Sequence[int] | None, *, sync: bool = False
) -> list[int] | None:
    """``level_start_index`` as Python ints when given and readable (see ``_readable``)."""
    if level_start_index is None:
        return None
    if isinstance(level_start_index, Tensor):
        if not _readable(level_start_index, sync):
            return None
        return [int(start) for start in level_start_index.reshape(-1).tolist()]
    return [int(start) for start in level_start_index]


def _check_starts(starts: list[int], shapes: list[tuple[int, int]]) -> None:
    expected = [sum(h * w for h, w in shapes[:level]) for level in range(len(shapes))]
    if starts != expected:
        raise _fail(
            f"level_start_index {starts} does not match spatial_shapes {shapes}: each level "
            f"starts where the previous ones end, {expected} (or pass None to compute it)"
        )


def _level_starts(shapes_tensor: Tensor) -> Tensor:
    sizes = shapes_tensor[:, 0] * shapes_tensor[:, 1]
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


@functools.lru_cache(maxsize=64)
def _cached_level_tensors(
    shapes: tuple[tuple[int, int], ...], device: torch.device
) -> tuple[Tensor, Tensor]:
    with torch.inference_mode(False):  # normal tensors, usable by later autograd calls
        shapes_tensor = torch.tensor(shapes, dtype=torch.long, device=device)
        return shapes_tensor, _level_starts(shapes_tensor)


def level_tensors(spatial_shapes: SpatialShapes, device: torch.device) -> tuple[Tensor, Tensor]:
    """``spatial_shapes`` as an int64 ``[levels, 2]`` tensor on ``device``, and each level's
    first key. Shapes given as Python ints are copied to each device once and reused: a
    host-to-device copy in every call would wait for the GPU every call."""
    if isinstance(spatial_shapes, Tensor):
        shapes_tensor = spatial_shapes.to(device=device, dtype=torch.long)
        return shapes_tensor, _level_starts(shapes_tensor)
    shapes = tuple((int(h), int(w)) for h, w in spatial_shapes)
    if torch.compiler.is_compiling():
        shapes_tensor = torch.tensor(shapes, dtype=torch.long, device=device)
        return shapes_tensor, _level_starts(shapes_tensor)
    return _cached_level_tensors(shapes, torch.device(device))


def _assert_levels_on_device(
    shapes_tensor: Tensor, expected_starts: Tensor, starts: Tensor, keys: int
) -> None:
    """Checks level shapes and starts that live on a GPU without waiting for it: a mismatch
    fails later as a device-side assert instead of reading outside ``value``.
    ``expected_starts`` are the running sums of the level sizes (``level_tensors``)."""
    sizes = shapes_tensor[:, 0] * shapes_tensor[:, 1]
    valid = (shapes_tensor.min() >= 1) & (sizes.sum() == keys) & (starts == expected_starts).all()
    torch._assert_async(
        valid,
        "multi_scale_deformable_attention: spatial_shapes / level_start_index do not match "
        f"value (S={keys}): every level needs h, w >= 1, sum(h * w) must be S and each level "
        "must start where the previous ones end",
    )


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
    starts_given = _static_starts(level_start_index)
    if shapes is not None and starts_given is not None:
        _check_starts(starts_given, shapes)
    if torch.onnx.is_in_onnx_export():
        chosen = "pytorch"
    else:
        chosen = select_backend(value.device.type, backend)
    if chosen == "pytorch":
        if shapes is None:  # the reference needs the shapes on the host anyway
            shapes = cast(list[tuple[int, int]], _static_shapes(spatial_shapes, sync=True))
            _check_levels(shapes, sampling_locations.shape[3], value.shape[1])
        if starts_given is None and not torch.compiler.is_compiling():
            starts_given = _static_starts(level_start_index, sync=True)
            if starts_given is not None:
                _check_starts(starts_given, shapes)
        return ms_deform_attn_pytorch(value, shapes, sampling_locations, attention_weights)

    from visionforge_dino.ops.custom_op import ms_deform_attn

    shapes_tensor, expected_starts = level_tensors(
        spatial_shapes if shapes is None else shapes, value.device
    )
    starts = expected_starts
    checked_on_host = shapes is not None and (level_start_index is None or starts_given is not None)
    if not checked_on_host:
        if level_start_index is not None:
            starts = torch.as_tensor(level_start_index, dtype=torch.long, device=value.device)
        _assert_levels_on_device(shapes_tensor, expected_starts, starts.reshape(-1), value.shape[1])
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
