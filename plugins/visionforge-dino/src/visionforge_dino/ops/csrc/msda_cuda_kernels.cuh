// CUDA kernels of multi-scale deformable attention (forward and backward).
//
// A group of G lanes (G a power of two <= 32, inside one warp) handles one
// (batch, query, head); each lane owns V consecutive channels (16-byte vector loads when the
// channel count and pointers allow). The backward pass differs from the original kernel in
// three ways:
//   * the per-sample gradients of the sampling location and the attention weight are summed
//     over channels with warp shuffles inside the group (no shared memory, no serial
//     reduction, no atomics for them);
//   * the value gradient is accumulated in fp32 (fp64 for double) with vectorized atomics
//     (float4/float2 atomicAdd on sm_90+), V channels per instruction, and only for corners
//     inside the level with a non-zero weight;
//   * fp16/bf16 values never take half-precision atomics: the fp32 buffer is cast once.
// Only c10 headers are included, which keeps nvcc's part of the build short. The kernels are
// plain templates over CUDA's built-ins, so the tests also compile them for the CPU under a
// lane emulator (tests/cuda_emulator). Launchers: msda_cuda_kernels.cu; tensor handling and
// op registration: msda_cuda.cpp.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <initializer_list>

#include "msda_common.h"

namespace visionforge_msda {
namespace kernels {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T val[V];
};

template <typename scalar_t, int V, typename acc_t>
__device__ __forceinline__ void load_pack(const scalar_t* __restrict__ src, acc_t (&dst)[V]) {
  const Pack<scalar_t, V> pack = *reinterpret_cast<const Pack<scalar_t, V>*>(src);
#pragma unroll
  for (int i = 0; i < V; ++i) {
    dst[i] = static_cast<acc_t>(pack.val[i]);
  }
}

template <typename scalar_t, int V, typename acc_t>
__device__ __forceinline__ void store_pack(scalar_t* __restrict__ dst, const acc_t (&src)[V]) {
  Pack<scalar_t, V> pack;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    pack.val[i] = static_cast<scalar_t>(src[i]);
  }
  *reinterpret_cast<Pack<scalar_t, V>*>(dst) = pack;
}

template <int V>
__device__ __forceinline__ void atomic_add_scalars(float* dst, const float (&src)[V]) {
#pragma unroll
  for (int i = 0; i < V; ++i) {
    atomicAdd(dst + i, src[i]);
  }
}

template <int V>
__device__ __forceinline__ void atomic_add_pack(float* dst, const float (&src)[V]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (V % 4 == 0) {
#pragma unroll
    for (int i = 0; i < V; i += 4) {
      atomicAdd(reinterpret_cast<float4*>(dst + i),
                make_float4(src[i], src[i + 1], src[i + 2], src[i + 3]));
    }
  } else if constexpr (V % 2 == 0) {
#pragma unroll
    for (int i = 0; i < V; i += 2) {
      atomicAdd(reinterpret_cast<float2*>(dst + i), make_float2(src[i], src[i + 1]));
    }
  } else {
    atomic_add_scalars<V>(dst, src);
  }
#else
  atomic_add_scalars<V>(dst, src);
#endif
}

template <int V>
__device__ __forceinline__ void atomic_add_pack(double* dst, const double (&src)[V]) {
#pragma unroll
  for (int i = 0; i < V; ++i) {
    atomicAdd(dst + i, src[i]);
  }
}

// Mask of the `lanes` threads of this thread's group inside its warp.
__device__ __forceinline__ unsigned group_mask(int lanes) {
  if (lanes == kWarp) {
    return 0xffffffffu;
  }
  const int first = (threadIdx.x % kWarp) / lanes * lanes;
  return ((1u << lanes) - 1u) << first;
}

// One lane's place: its group, a (batch, query, head) = (b * queries + q) * heads + h; its lane
// in the group; where value[b, key, h, :] starts (value_base + key * key_stride); and the
// group's first sample.
struct GroupSlice {
  int64_t group;
  int lane;
  int64_t key_stride;
  int64_t value_base;
  int64_t first_sample;
};

// Fills `g` for this thread; false past the last group (whole groups leave together).
__device__ __forceinline__ bool locate_group(const Dims& d, int lanes, GroupSlice& g) {
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  g.group = thread / lanes;
  g.lane = static_cast<int>(thread % lanes);
  if (g.group >= d.batch * d.queries * d.heads) {
    return false;
  }
  const int64_t h = g.group % d.heads;
  const int64_t b = g.group / (d.heads * d.queries);
  g.key_stride = d.heads * d.channels;
  g.value_base = (b * d.keys * d.heads + h) * d.channels;
  g.first_sample = g.group * d.levels * d.points;
  return true;
}

template <typename scalar_t, int V>
__global__ void __launch_bounds__(kThreads) forward_kernel(
    const Dims d,
    const int lanes,
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts,
    const at::opmath_type<scalar_t>* __restrict__ loc,
    const at::opmath_type<scalar_t>* __restrict__ attn,
    scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  GroupSlice g;
  if (!locate_group(d, lanes, g)) {
    return;
  }
  const int64_t vectors = d.channels / V;
  for (int64_t vec = g.lane; vec < vectors; vec += lanes) {
    acc_t acc[V];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      acc[i] = acc_t(0);
    }
    for (int64_t l = 0; l < d.levels; ++l) {
      const int64_t height = shapes[2 * l];
      const int64_t width = shapes[2 * l + 1];
      const int64_t start = starts[l];
      for (int64_t p = 0; p < d.points; ++p) {
        const int64_t s = g.first_sample + l * d.points + p;
        Corners<acc_t> c;
        if (!bilinear_corners(loc[2 * s], loc[2 * s + 1], height, width, start, c)) {
          continue;
        }
        const acc_t w = attn[s];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const acc_t cw = w * c.weight[k];
          if (c.index[k] < 0 || cw == acc_t(0)) {
            continue;
          }
          acc_t v[V];
          load_pack<scalar_t, V>(value + g.value_base + c.index[k] * g.key_stride + vec * V, v);
#pragma unroll
          for (int i = 0; i < V; ++i) {
            acc[i] += cw * v[i];
          }
        }
      }
    }
    store_pack<scalar_t, V>(out + g.group * d.channels + vec * V, acc);
  }
}

template <typename scalar_t, int V>
__global__ void __launch_bounds__(kThreads) backward_kernel(
    const Dims d,
    const int lanes,
    const scalar_t* __restrict__ grad_out,
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts,
    const at::opmath_type<scalar_t>* __restrict__ loc,
    const at::opmath_type<scalar_t>* __restrict__ attn,
    at::opmath_type<scalar_t>* __restrict__ grad_value,
    at::opmath_type<scalar_t>* __restrict__ grad_loc,
    at::opmath_type<scalar_t>* __restrict__ grad_attn) {
  using acc_t = at::opmath_type<scalar_t>;
  GroupSlice g;
  // Whole groups leave together, so the shuffles below only involve live lanes.
  if (!locate_group(d, lanes, g)) {
    return;
  }
  const unsigned mask = group_mask(lanes);
  const int64_t vectors = d.channels / V;
  for (int64_t l = 0; l < d.levels; ++l) {
    const int64_t height = shapes[2 * l];
    const int64_t width = shapes[2 * l + 1];
    const int64_t start = starts[l];
    for (int64_t p = 0; p < d.points; ++p) {
      const int64_t s = g.first_sample + l * d.points + p;
      Corners<acc_t> c;
      // The location is shared by the group, so the whole group skips together.
      if (!bilinear_corners(loc[2 * s], loc[2 * s + 1], height, width, start, c)) {
        continue;
      }
      const acc_t w = attn[s];
      acc_t grad_w = 0;
      acc_t grad_x = 0;
      acc_t grad_y = 0;
      for (int64_t vec = g.lane; vec < vectors; vec += lanes) {
        acc_t go[V];
        load_pack<scalar_t, V>(grad_out + g.group * d.channels + vec * V, go);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (c.index[k] < 0) {
            continue;
          }
          const int64_t offset = g.value_base + c.index[k] * g.key_stride + vec * V;
          acc_t v[V];
          load_pack<scalar_t, V>(value + offset, v);
          acc_t dot = 0;
#pragma unroll
          for (int i = 0; i < V; ++i) {
            dot += go[i] * v[i];
          }
          grad_w += c.weight[k] * dot;
          grad_x += c.d_dx[k] * dot;
          grad_y += c.d_dy[k] * dot;
          const acc_t cw = w * c.weight[k];
          if (cw != acc_t(0)) {
            acc_t contribution[V];
#pragma unroll
            for (int i = 0; i < V; ++i) {
              contribution[i] = cw * go[i];
            }
            atomic_add_pack<V>(grad_value + offset, contribution);
          }
        }
      }
      for (int stride = lanes / 2; stride > 0; stride /= 2) {
        grad_w += __shfl_xor_sync(mask, grad_w, stride, lanes);
        grad_x += __shfl_xor_sync(mask, grad_x, stride, lanes);
        grad_y += __shfl_xor_sync(mask, grad_y, stride, lanes);
      }
      if (g.lane == 0) {
        grad_attn[s] = grad_w;
        grad_loc[2 * s] = w * grad_x * static_cast<acc_t>(width);
        grad_loc[2 * s + 1] = w * grad_y * static_cast<acc_t>(height);
      }
    }
  }
}

// How one call is launched: channels per lane (`width`: 1 or a 16-byte vector), lanes per
// (batch, query, head) and blocks of kThreads threads (0 when there is nothing to compute).
struct LaunchPlan {
  int width;
  int lanes;
  unsigned int blocks;
};

template <typename scalar_t>
constexpr int kWide = static_cast<int>(16 / sizeof(scalar_t));

inline bool aligned(const void* ptr, int64_t bytes) {
  return reinterpret_cast<std::uintptr_t>(ptr) % static_cast<std::uintptr_t>(bytes) == 0;
}

// Lanes per (batch, query, head): enough to cover the channel vectors, at most a warp.
inline int group_lanes(int64_t vectors) {
  int lanes = 1;
  while (lanes < kWarp && lanes < vectors) {
    lanes *= 2;
  }
  return lanes;
}

// The vector width is wide when the channel count and every pointer (`pointers`: the tensors the
// kernel reads or writes in packs) allow it.
template <typename scalar_t>
LaunchPlan plan_launch(const Dims& d, std::initializer_list<const void*> pointers) {
  int width = d.channels % kWide<scalar_t> == 0 ? kWide<scalar_t> : 1;
  for (const void* ptr : pointers) {
    if (!aligned(ptr, 16)) {
      width = 1;
    }
  }
  const int lanes = group_lanes(d.channels / width);
  if (d.batch * d.queries * d.heads * d.channels == 0) {
    return {width, lanes, 0};
  }
  const int64_t threads = d.batch * d.queries * d.heads * lanes;
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= INT32_MAX, "msda: ", threads, " threads exceed one CUDA launch");
  return {width, lanes, static_cast<unsigned int>(blocks)};
}

// The kernels for a plan: the 16-byte-vector instantiation when the plan's width allows it.
template <typename scalar_t>
auto forward_kernel_for(const LaunchPlan& plan) {
  return plan.width == kWide<scalar_t> ? forward_kernel<scalar_t, kWide<scalar_t>>
                                       : forward_kernel<scalar_t, 1>;
}

template <typename scalar_t>
auto backward_kernel_for(const LaunchPlan& plan) {
  return plan.width == kWide<scalar_t> ? backward_kernel<scalar_t, kWide<scalar_t>>
                                       : backward_kernel<scalar_t, 1>;
}

}  // namespace kernels
}  // namespace visionforge_msda
