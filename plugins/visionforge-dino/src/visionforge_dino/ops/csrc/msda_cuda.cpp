// CUDA entry points of multi-scale deformable attention: checks, allocation, dtype dispatch
// and the torch.library registration; the kernels are in msda_cuda_kernels.cu.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "msda_host.h"
#include "msda_cuda.h"

namespace visionforge_msda {
namespace {

at::Tensor forward_cuda(
    const at::Tensor& value_in,
    const at::Tensor& spatial_shapes_in,
    const at::Tensor& level_start_index_in,
    const at::Tensor& sampling_locations_in,
    const at::Tensor& attention_weights_in) {
  const c10::cuda::CUDAGuard guard(value_in.device());
  const Inputs in = contiguous_inputs(value_in, spatial_shapes_in, level_start_index_in,
                                      sampling_locations_in, attention_weights_in);
  at::Tensor out =
      at::empty({in.d.batch, in.d.queries, in.d.heads * in.d.channels}, in.value.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_forward(in, out, [&](const auto&... args) { launch_forward(args..., stream); });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_output_in,
    const at::Tensor& value_in,
    const at::Tensor& spatial_shapes_in,
    const at::Tensor& level_start_index_in,
    const at::Tensor& sampling_locations_in,
    const at::Tensor& attention_weights_in) {
  const c10::cuda::CUDAGuard guard(value_in.device());
  const Inputs in = contiguous_inputs(value_in, spatial_shapes_in, level_start_index_in,
                                      sampling_locations_in, attention_weights_in);
  check_grad_output(grad_output_in, in);
  const at::Tensor grad_output = grad_output_in.contiguous();
  at::Tensor grad_value_acc = at::zeros(in.value.sizes(), in.loc.options());
  at::Tensor grad_loc = at::zeros(in.loc.sizes(), in.loc.options());
  at::Tensor grad_attn = at::zeros(in.attn.sizes(), in.attn.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_backward(in, grad_output, grad_value_acc, grad_loc, grad_attn,
                    [&](const auto&... args) { launch_backward(args..., stream); });
  return {grad_value_acc.to(in.value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace
}  // namespace visionforge_msda

TORCH_LIBRARY(visionforge_msda_cuda, m) {
  m.def(
      "forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(visionforge_msda_cuda, CUDA, m) {
  m.impl("forward", &visionforge_msda::forward_cuda);
  m.impl("backward", &visionforge_msda::backward_cuda);
}
