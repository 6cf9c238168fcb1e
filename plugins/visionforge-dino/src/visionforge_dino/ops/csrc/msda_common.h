// Shared pieces of the multi-scale deformable attention kernels (CPU and CUDA): sizes and the
// bilinear corner math. Header-light on purpose: nvcc compiles it without ATen.
//
// Semantics follow torch.nn.functional.grid_sample(mode="bilinear", padding_mode="zeros",
// align_corners=False): a location (x, y) in [0, 1] maps to the pixel coordinate
// (x * width - 0.5, y * height - 0.5); corners outside the level contribute zero.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace visionforge_msda {

// Sizes of one call: value [batch, keys, heads, channels], sampling locations
// [batch, queries, heads, levels, points, 2], attention weights [batch, queries, heads,
// levels, points], output [batch, queries, heads * channels].
struct Dims {
  int64_t batch;
  int64_t keys;
  int64_t heads;
  int64_t channels;
  int64_t queries;
  int64_t levels;
  int64_t points;
};

// The four corners (north-west, north-east, south-west, south-east) of one bilinear sample:
// the row of each corner in the flattened keys (-1 when outside the level), its interpolation
// weight and the derivatives of that weight with respect to the pixel coordinates x and y.
template <typename acc_t>
struct Corners {
  int64_t index[4];
  acc_t weight[4];
  acc_t d_dx[4];
  acc_t d_dy[4];
};

template <typename acc_t>
C10_HOST_DEVICE inline acc_t floor_of(acc_t v) {
#ifdef __CUDA_ARCH__
  return ::floor(v);
#else
  return std::floor(v);
#endif
}

// Fills `c` for the normalized location (loc_x, loc_y) on a level of height x width whose first
// key is `level_start`. Returns false when no corner can contribute (value or gradient), which
// also keeps the integer conversion below in range.
template <typename acc_t>
C10_HOST_DEVICE inline bool bilinear_corners(
    acc_t loc_x,
    acc_t loc_y,
    int64_t height,
    int64_t width,
    int64_t level_start,
    Corners<acc_t>& c) {
  const acc_t x = loc_x * static_cast<acc_t>(width) - acc_t(0.5);
  const acc_t y = loc_y * static_cast<acc_t>(height) - acc_t(0.5);
  if (!(x >= acc_t(-1) && y >= acc_t(-1) && x < static_cast<acc_t>(width) &&
        y < static_cast<acc_t>(height))) {
    return false;
  }
  const acc_t x0f = floor_of(x);
  const acc_t y0f = floor_of(y);
  const int64_t x0 = static_cast<int64_t>(x0f);
  const int64_t y0 = static_cast<int64_t>(y0f);
  const acc_t fx = x - x0f;
  const acc_t fy = y - y0f;
  const acc_t gx = acc_t(1) - fx;
  const acc_t gy = acc_t(1) - fy;

  const int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1};
  const int64_t ys[4] = {y0, y0, y0 + 1, y0 + 1};
  c.weight[0] = gy * gx;
  c.weight[1] = gy * fx;
  c.weight[2] = fy * gx;
  c.weight[3] = fy * fx;
  c.d_dx[0] = -gy;
  c.d_dx[1] = gy;
  c.d_dx[2] = -fy;
  c.d_dx[3] = fy;
  c.d_dy[0] = -gx;
  c.d_dy[1] = -fx;
  c.d_dy[2] = gx;
  c.d_dy[3] = fx;
  for (int k = 0; k < 4; ++k) {
    const bool inside = xs[k] >= 0 && xs[k] < width && ys[k] >= 0 && ys[k] < height;
    c.index[k] = inside ? level_start + ys[k] * width + xs[k] : -1;
  }
  return true;
}

}  // namespace visionforge_msda
