// C++ CPU kernels of multi-scale deformable attention, parallelized with at::parallel_for.
//
// Forward: one task per (batch, query) row; each writes only its own output rows.
// Backward: one task per (batch, head); a task owns value[b, :, h, :], so the value gradient
// is accumulated without atomics or per-thread copies.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "msda_host.h"

namespace visionforge_msda {
namespace {

template <typename scalar_t>
void forward_kernel(
    const Dims& d,
    const scalar_t* value,
    const int64_t* shapes,
    const int64_t* starts,
    const at::opmath_type<scalar_t>* loc,
    const at::opmath_type<scalar_t>* attn,
    scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = d.batch * d.queries;
  const int64_t work_per_row = std::max<int64_t>(1, d.heads * d.levels * d.points * d.channels);
  const int64_t grain = std::max<int64_t>(1, 32768 / work_per_row);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(d.channels);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / d.queries;
      for (int64_t h = 0; h < d.heads; ++h) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        const int64_t first_sample = (row * d.heads + h) * d.levels * d.points;
        for (int64_t l = 0; l < d.levels; ++l) {
          for (int64_t p = 0; p < d.points; ++p) {
            const int64_t s = first_sample + l * d.points + p;
            Corners<acc_t> c;
            if (!bilinear_corners(loc[2 * s], loc[2 * s + 1], shapes[2 * l], shapes[2 * l + 1],
                                  starts[l], c)) {
              continue;
            }
            for (int k = 0; k < 4; ++k) {
              const acc_t cw = attn[s] * c.weight[k];
              if (c.index[k] < 0 || cw == acc_t(0)) {
                continue;
              }
              const scalar_t* v = value + ((b * d.keys + c.index[k]) * d.heads + h) * d.channels;
              for (int64_t ch = 0; ch < d.channels; ++ch) {
                acc[ch] += cw * static_cast<acc_t>(v[ch]);
              }
            }
          }
        }
        scalar_t* o = out + (row * d.heads + h) * d.channels;
        for (int64_t ch = 0; ch < d.channels; ++ch) {
          o[ch] = static_cast<scalar_t>(acc[ch]);
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_kernel(
    const Dims& d,
    const scalar_t* grad_out,
    const scalar_t* value,
    const int64_t* shapes,
    const int64_t* starts,
    const at::opmath_type<scalar_t>* loc,
    const at::opmath_type<scalar_t>* attn,
    at::opmath_type<scalar_t>* grad_value,
    at::opmath_type<scalar_t>* grad_loc,
    at::opmath_type<scalar_t>* grad_attn) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, d.batch * d.heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> g(d.channels);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / d.heads;
      const int64_t h = bh % d.heads;
      for (int64_t q = 0; q < d.queries; ++q) {
        const int64_t head_row = (b * d.queries + q) * d.heads + h;
        const scalar_t* go = grad_out + head_row * d.channels;
        for (int64_t ch = 0; ch < d.channels; ++ch) {
          g[ch] = static_cast<acc_t>(go[ch]);
        }
        const int64_t first_sample = head_row * d.levels * d.points;
        for (int64_t l = 0; l < d.levels; ++l) {
          const int64_t height = shapes[2 * l];
          const int64_t width = shapes[2 * l + 1];
          for (int64_t p = 0; p < d.points; ++p) {
            const int64_t s = first_sample + l * d.points + p;
            Corners<acc_t> c;
            if (!bilinear_corners(loc[2 * s], loc[2 * s + 1], height, width, starts[l], c)) {
              continue;
            }
            const acc_t w = attn[s];
            acc_t grad_w = 0;
            acc_t grad_x = 0;
            acc_t grad_y = 0;
            for (int k = 0; k < 4; ++k) {
              if (c.index[k] < 0) {
                continue;
              }
              const int64_t offset = ((b * d.keys + c.index[k]) * d.heads + h) * d.channels;
              const scalar_t* v = value + offset;
              acc_t dot = 0;
              for (int64_t ch = 0; ch < d.channels; ++ch) {
                dot += g[ch] * static_cast<acc_t>(v[ch]);
              }
              grad_w += c.weight[k] * dot;
              grad_x += c.d_dx[k] * dot;
              grad_y += c.d_dy[k] * dot;
              const acc_t cw = w * c.weight[k];
              if (cw != acc_t(0)) {
                acc_t* gv = grad_value + offset;
                for (int64_t ch = 0; ch < d.channels; ++ch) {
                  gv[ch] += cw * g[ch];
                }
              }
            }
            grad_attn[s] = grad_w;
            grad_loc[2 * s] = w * grad_x * static_cast<acc_t>(width);
            grad_loc[2 * s + 1] = w * grad_y * static_cast<acc_t>(height);
          }
        }
      }
    }
  });
}

void check_cpu_levels(const Dims& d, const at::Tensor& shapes, const at::Tensor& starts) {
  const int64_t* sh = shapes.data_ptr<int64_t>();
  const int64_t* st = starts.data_ptr<int64_t>();
  for (int64_t l = 0; l < d.levels; ++l) {
    TORCH_CHECK(sh[2 * l] >= 1 && sh[2 * l + 1] >= 1 && st[l] >= 0 &&
                    st[l] + sh[2 * l] * sh[2 * l + 1] <= d.keys,
                "msda: level ", l, " (", sh[2 * l], "x", sh[2 * l + 1], " starting at key ", st[l],
                ") does not fit in the ", d.keys, " keys of value");
  }
}

at::Tensor forward_cpu(
    const at::Tensor& value_in,
    const at::Tensor& spatial_shapes_in,
    const at::Tensor& level_start_index_in,
    const at::Tensor& sampling_locations_in,
    const at::Tensor& attention_weights_in) {
  const Inputs in = contiguous_inputs(value_in, spatial_shapes_in, level_start_index_in,
                                      sampling_locations_in, attention_weights_in);
  check_cpu_levels(in.d, in.shapes, in.starts);
  at::Tensor out =
      at::empty({in.d.batch, in.d.queries, in.d.heads * in.d.channels}, in.value.options());
  dispatch_forward(in, out, [](const auto&... args) { forward_kernel(args...); });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_output_in,
    const at::Tensor& value_in,
    const at::Tensor& spatial_shapes_in,
    const at::Tensor& level_start_index_in,
    const at::Tensor& sampling_locations_in,
    const at::Tensor& attention_weights_in) {
  const Inputs in = contiguous_inputs(value_in, spatial_shapes_in, level_start_index_in,
                                      sampling_locations_in, attention_weights_in);
  check_grad_output(grad_output_in, in);
  const at::Tensor grad_output = grad_output_in.contiguous();
  check_cpu_levels(in.d, in.shapes, in.starts);
  // Reduced-precision values accumulate their gradient in float and are cast once at the end.
  at::Tensor grad_value_acc = at::zeros(in.value.sizes(), in.loc.options());
  at::Tensor grad_loc = at::zeros(in.loc.sizes(), in.loc.options());
  at::Tensor grad_attn = at::zeros(in.attn.sizes(), in.attn.options());
  dispatch_backward(in, grad_output, grad_value_acc, grad_loc, grad_attn,
                    [](const auto&... args) { backward_kernel(args...); });
  return {grad_value_acc.to(in.value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace
}  // namespace visionforge_msda

TORCH_LIBRARY(visionforge_msda_cpu, m) {
  m.def(
      "forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(visionforge_msda_cpu, CPU, m) {
  m.impl("forward", &visionforge_msda::forward_cpu);
  m.impl("backward", &visionforge_msda::backward_cpu);
}
