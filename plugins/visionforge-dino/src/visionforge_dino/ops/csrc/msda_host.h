// Host side shared by the entry points (CPU, CUDA and the tests' emulated CUDA kernels):
// input validation, contiguity and the dtype dispatch that hands typed pointers to a kernel.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "msda_common.h"

namespace visionforge_msda {

// Validates the inputs of the compiled kernels (the Python wrapper already checked them with
// friendlier messages) and returns their sizes.
inline Dims check_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, "msda: value must be [batch, keys, heads, channels], got ",
              value.sizes());
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "msda: sampling_locations must be [batch, queries, heads, levels, points, 2], got ",
              sampling_locations.sizes());
  TORCH_CHECK(attention_weights.dim() == 5,
              "msda: attention_weights must be [batch, queries, heads, levels, points], got ",
              attention_weights.sizes());
  const Dims d{value.size(0),
               value.size(1),
               value.size(2),
               value.size(3),
               sampling_locations.size(1),
               sampling_locations.size(3),
               sampling_locations.size(4)};
  TORCH_CHECK(sampling_locations.size(0) == d.batch && sampling_locations.size(2) == d.heads,
              "msda: sampling_locations ", sampling_locations.sizes(),
              " does not match value ", value.sizes());
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "msda: attention_weights ", attention_weights.sizes(),
              " does not match sampling_locations ", sampling_locations.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(0) == d.levels &&
                  spatial_shapes.size(1) == 2 && spatial_shapes.scalar_type() == at::kLong,
              "msda: spatial_shapes must be int64 [levels, 2], got ", spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == d.levels &&
                  level_start_index.scalar_type() == at::kLong,
              "msda: level_start_index must be int64 [levels], got ", level_start_index.sizes());
  const auto acc_type = value.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(sampling_locations.scalar_type() == acc_type &&
                  attention_weights.scalar_type() == acc_type,
              "msda: sampling_locations and attention_weights must be ", acc_type,
              " for a value of ", value.scalar_type());
  for (const auto* t : {&spatial_shapes, &level_start_index, &sampling_locations,
                        &attention_weights}) {
    TORCH_CHECK(t->device() == value.device(), "msda: all inputs must be on ", value.device());
  }
  return d;
}

// The checked inputs, made contiguous, with their sizes.
struct Inputs {
  Dims d;
  at::Tensor value;
  at::Tensor shapes;
  at::Tensor starts;
  at::Tensor loc;
  at::Tensor attn;
};

inline Inputs contiguous_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights);
  return {d,
          value.contiguous(),
          spatial_shapes.contiguous(),
          level_start_index.contiguous(),
          sampling_locations.contiguous(),
          attention_weights.contiguous()};
}

// The incoming gradient must match the forward output in size, dtype and device.
inline void check_grad_output(const at::Tensor& grad_output, const Inputs& in) {
  const Dims& d = in.d;
  TORCH_CHECK(grad_output.numel() == d.batch * d.queries * d.heads * d.channels &&
                  grad_output.scalar_type() == in.value.scalar_type() &&
                  grad_output.device() == in.value.device(),
              "msda: grad_output ", grad_output.sizes(), " does not match the output");
}

// Calls kernel(d, value, shapes, starts, loc, attn, out) with pointers typed for the value's
// dtype (loc and attn in its opmath type).
template <typename Kernel>
void dispatch_forward(const Inputs& in, const at::Tensor& out, const Kernel& kernel) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, in.value.scalar_type(), "msda_forward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        kernel(in.d, in.value.const_data_ptr<scalar_t>(), in.shapes.const_data_ptr<int64_t>(),
               in.starts.const_data_ptr<int64_t>(), in.loc.const_data_ptr<acc_t>(),
               in.attn.const_data_ptr<acc_t>(), out.mutable_data_ptr<scalar_t>());
      });
}

// Calls kernel(d, grad_output, value, shapes, starts, loc, attn, grad_value, grad_loc,
// grad_attn); the three gradients are opmath-typed (grad_value is the accumulator the caller
// casts to the value's dtype).
template <typename Kernel>
void dispatch_backward(
    const Inputs& in,
    const at::Tensor& grad_output,
    const at::Tensor& grad_value,
    const at::Tensor& grad_loc,
    const at::Tensor& grad_attn,
    const Kernel& kernel) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, in.value.scalar_type(), "msda_backward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        kernel(in.d, grad_output.const_data_ptr<scalar_t>(), in.value.const_data_ptr<scalar_t>(),
               in.shapes.const_data_ptr<int64_t>(), in.starts.const_data_ptr<int64_t>(),
               in.loc.const_data_ptr<acc_t>(), in.attn.const_data_ptr<acc_t>(),
               grad_value.mutable_data_ptr<acc_t>(), grad_loc.mutable_data_ptr<acc_t>(),
               grad_attn.mutable_data_ptr<acc_t>());
      });
}

}  // namespace visionforge_msda
