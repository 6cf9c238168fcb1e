// Launchers of the CUDA kernels (defined in msda_cuda_kernels.cu for double, float, Half and
// BFloat16). Pointers are to contiguous tensors on the current device; locations and weights
// are in at::opmath_type<scalar_t> (float, or double for double values).
#pragma once

#include <ATen/OpMathType.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "msda_common.h"

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
    cudaStream_t stream);

// grad_value, grad_loc and grad_attn must be zero-filled; grad_value is the opmath-typed
// accumulator (the caller casts it to the value's dtype).
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
    cudaStream_t stream);

}  // namespace visionforge_msda
