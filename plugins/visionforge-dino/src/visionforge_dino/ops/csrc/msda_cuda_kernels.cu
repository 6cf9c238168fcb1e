// Launchers of the CUDA kernels in msda_cuda_kernels.cuh, instantiated for double, float, Half
// and BFloat16.
#include <c10/cuda/CUDAException.h>

#include "msda_cuda.h"
#include "msda_cuda_kernels.cuh"

namespace visionforge_msda {

template <typename scalar_t>
void launch_forward(
    const Dims& d,
    const scalar_t* value,
    const int64_t* shapes,
    const int64_t* starts,
    const at::opmath_type<scalar_t>* loc,
    const at::opmath_type<scalar_t>* attn,
    scalar_t* out,
    cudaStream_t stream) {
  using namespace kernels;
  const LaunchPlan plan = plan_launch<scalar_t>(d, {value, out});
  if (plan.blocks == 0) {
    return;
  }
  const auto kernel = forward_kernel_for<scalar_t>(plan);
  kernel<<<plan.blocks, kThreads, 0, stream>>>(d, plan.lanes, value, shapes, starts, loc, attn,
                                               out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_backward(
    const Dims& d,
    const scalar_t* grad_out,
    const scalar_t* value,
    const int64_t* shapes,
    const int64_t* starts,
    const at::opmath_type<scalar_t>* loc,
    const at::opmath_type<scalar_t>* attn,
    at::opmath_type<scalar_t>* grad_value,
    at::opmath_type<scalar_t>* grad_loc,
    at::opmath_type<scalar_t>* grad_attn,
    cudaStream_t stream) {
  using namespace kernels;
  // grad_value holds opmath values: a wide pack of it spans more bytes, aligned the same way.
  const LaunchPlan plan = plan_launch<scalar_t>(d, {value, grad_out, grad_value});
  if (plan.blocks == 0) {
    return;
  }
  const auto kernel = backward_kernel_for<scalar_t>(plan);
  kernel<<<plan.blocks, kThreads, 0, stream>>>(d, plan.lanes, grad_out, value, shapes, starts,
                                               loc, attn, grad_value, grad_loc, grad_attn);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define VISIONFORGE_MSDA_INSTANTIATE(T)                                                      \
  template void launch_forward<T>(const Dims&, const T*, const int64_t*, const int64_t*,     \
                                  const at::opmath_type<T>*, const at::opmath_type<T>*, T*,  \
                                  cudaStream_t);                                             \
  template void launch_backward<T>(const Dims&, const T*, const T*, const int64_t*,          \
                                   const int64_t*, const at::opmath_type<T>*,                \
                                   const at::opmath_type<T>*, at::opmath_type<T>*,           \
                                   at::opmath_type<T>*, at::opmath_type<T>*, cudaStream_t);

VISIONFORGE_MSDA_INSTANTIATE(double)
VISIONFORGE_MSDA_INSTANTIATE(float)
VISIONFORGE_MSDA_INSTANTIATE(c10::Half)
VISIONFORGE_MSDA_INSTANTIATE(c10::BFloat16)

}  // namespace visionforge_msda
