// Shared pieces of the multi-scale deformable attention kernels (CPU and CUDA).
//
// Semantics follow torch.nn.functional.grid_sample(mode="bilinear", padding_mode="zeros",
// align_corners=False): a location (x, y) in [0, 1] maps to the pixel coordinate
// (x * width - 0.5, y * height - 0.5); corners outside the level contribute zero.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

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
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const bool inside = xs[k] >= 0 && xs[k] < width && ys[k] >= 0 && ys[k] < height;
    c.index[k] = inside ? level_start + ys[k] * width + xs[k] : -1;
  }
  return true;
}

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

}  // namespace visionforge_msda
