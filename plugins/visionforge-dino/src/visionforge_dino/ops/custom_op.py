"""The compiled kernels as ``torch.library`` custom ops.

``visionforge_dino::ms_deform_attn`` and ``visionforge_dino::ms_deform_attn_backward`` run
the C++ kernel for CPU tensors and the CUDA kernel for CUDA tensors. Both have fake
(meta) implementations, so ``torch.compile`` and ``torch.export`` trace them, and the
forward's autograd formula is registered once, for both devices. Inputs must already be
prepared by :func:`visionforge_dino.ops.multi_scale_deformable_attention` (contiguous;
locations and weights in float32, or float64 for a float64 value).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from visionforge_dino.ops.backends import kernels

_DEVICES = ("cpu", "cuda")


@torch.library.custom_op("visionforge_dino::ms_deform_attn", mutates_args=(), device_types=_DEVICES)
def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Forward kernel: ``[B, Q, heads * dim]`` from the standard inputs."""
    result: Tensor = kernels(value.device.type).forward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    return result


@ms_deform_attn.register_fake
def _ms_deform_attn_fake(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    batch, _, heads, dim = value.shape
    return value.new_empty((batch, sampling_locations.shape[1], heads * dim))


@torch.library.custom_op(
    "visionforge_dino::ms_deform_attn_backward", mutates_args=(), device_types=_DEVICES
)
def ms_deform_attn_backward(
    grad_output: Tensor,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Backward kernel: gradients of value, sampling locations and attention weights."""
    grad_value, grad_locations, grad_weights = kernels(value.device.type).backward(
        grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    return grad_value, grad_locations, grad_weights


@ms_deform_attn_backward.register_fake
def _ms_deform_attn_backward_fake(
    grad_output: Tensor,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    return (
        torch.empty_like(value),
        torch.empty_like(sampling_locations),
        torch.empty_like(attention_weights),
    )


def _setup_context(ctx: Any, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
    value, spatial_shapes, level_start_index, locations, weights = ctx.saved_tensors
    grad_value, grad_locations, grad_weights = ms_deform_attn_backward(
        grad_output.contiguous(), value, spatial_shapes, level_start_index, locations, weights
    )
    return grad_value, None, None, grad_locations, grad_weights


ms_deform_attn.register_autograd(_backward, setup_context=_setup_context)
