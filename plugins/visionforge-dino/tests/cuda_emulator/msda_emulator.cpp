// The CUDA kernels of multi-scale deformable attention (msda_cuda_kernels.cuh), compiled for the
// CPU and run under the lane emulator of cuda_shim.h, with the launch plan the CUDA launchers
// use. Registered as torch.ops.visionforge_msda_emulated.{forward,backward} on CPU tensors with
// the signatures of the CUDA ops. Every output is allocated inside a guard band that must stay
// untouched: a kernel writing outside its tensor fails the call.
#include "cuda_shim.h"

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <exception>
#include <limits>
#include <thread>
#include <tuple>
#include <vector>

#include "msda_host.h"
#include "msda_cuda_kernels.cuh"

namespace visionforge_msda {
namespace {

using kernels::LaunchPlan;

// Runs `kernel()` once per thread of the launch, all lanes of a group at the same time.
template <typename Kernel>
void emulate_launch(const LaunchPlan& plan, const Kernel& kernel) {
  const int64_t threads = static_cast<int64_t>(plan.blocks) * kernels::kThreads;
  for (int64_t first = 0; first < threads; first += plan.lanes) {
    cuda_emulator::Group group(plan.lanes, static_cast<unsigned int>(first % kernels::kWarp));
    std::vector<std::exception_ptr> errors(static_cast<size_t>(plan.lanes));
    auto lane_body = [&](int lane) {
      const int64_t thread = first + lane;
      cuda_emulator::block_dim = {static_cast<unsigned int>(kernels::kThreads), 1, 1};
      cuda_emulator::block_index = {static_cast<unsigned int>(thread / kernels::kThreads), 0, 0};
      cuda_emulator::thread_index = {static_cast<unsigned int>(thread % kernels::kThreads), 0, 0};
      cuda_emulator::group = &group;
      try {
        kernel();
      } catch (...) {
        errors[static_cast<size_t>(lane)] = std::current_exception();
      }
      group.leave();
      cuda_emulator::group = nullptr;
    };
    if (plan.lanes == 1) {
      lane_body(0);
    } else {
      std::vector<std::thread> lanes;
      for (int lane = 0; lane < plan.lanes; ++lane) {
        lanes.emplace_back(lane_body, lane);
      }
      for (auto& lane : lanes) {
        lane.join();
      }
    }
    for (const auto& error : errors) {
      if (error) {
        std::rethrow_exception(error);
      }
    }
  }
}

constexpr int64_t kGuard = 64;  // elements each side; keeps 16-byte alignment for every dtype

// A tensor of `sizes` inside a buffer whose guard band holds `sentinel`.
struct Guarded {
  at::Tensor buffer;
  at::Tensor tensor;
  double sentinel;

  Guarded(at::IntArrayRef sizes, const at::TensorOptions& options, double fill, double guard)
      : sentinel(guard) {
    int64_t numel = 1;
    for (const int64_t size : sizes) {
      numel *= size;
    }
    buffer = at::full({numel + 2 * kGuard}, guard, options);
    tensor = buffer.narrow(0, kGuard, numel).view(sizes);
    tensor.fill_(fill);
  }

  // The tensor, after checking that the kernel left the guard band alone.
  at::Tensor checked(const char* name) const {
    const int64_t numel = tensor.numel();
    const bool intact = buffer.narrow(0, 0, kGuard).eq(sentinel).all().item<bool>() &&
                        buffer.narrow(0, kGuard + numel, kGuard).eq(sentinel).all().item<bool>();
    TORCH_CHECK(intact, "emulated msda kernel wrote outside ", name);
    return tensor;
  }
};

constexpr double kSentinel = -4096.0;  // exact in every floating dtype

// Emulates the CUDA launchers: the plan from the same pointers, then the kernel it selects.
struct EmulatedForward {
  template <typename scalar_t, typename acc_t>
  void operator()(const Dims& d, const scalar_t* value, const int64_t* shapes,
                  const int64_t* starts, const acc_t* loc, const acc_t* attn,
                  scalar_t* out) const {
    const LaunchPlan plan = kernels::plan_launch<scalar_t>(d, {value, out});
    const auto kernel = kernels::forward_kernel_for<scalar_t>(plan);
    emulate_launch(plan, [&] { kernel(d, plan.lanes, value, shapes, starts, loc, attn, out); });
  }
};

struct EmulatedBackward {
  template <typename scalar_t, typename acc_t>
  void operator()(const Dims& d, const scalar_t* grad_out, const scalar_t* value,
                  const int64_t* shapes, const int64_t* starts, const acc_t* loc,
                  const acc_t* attn, acc_t* grad_value, acc_t* grad_loc,
                  acc_t* grad_attn) const {
    const LaunchPlan plan = kernels::plan_launch<scalar_t>(d, {value, grad_out, grad_value});
    const auto kernel = kernels::backward_kernel_for<scalar_t>(plan);
    emulate_launch(plan, [&] {
      kernel(d, plan.lanes, grad_out, value, shapes, starts, loc, attn, grad_value, grad_loc,
             grad_attn);
    });
  }
};

at::Tensor forward_emulated(
    const at::Tensor& value_in,
    const at::Tensor& spatial_shapes_in,
    const at::Tensor& level_start_index_in,
    const at::Tensor& sampling_locations_in,
    const at::Tensor& attention_weights_in) {
  const Inputs in = contiguous_inputs(value_in, spatial_shapes_in, level_start_index_in,
                                      sampling_locations_in, attention_weights_in);
  const Guarded out({in.d.batch, in.d.queries, in.d.heads * in.d.channels}, in.value.options(),
                    std::numeric_limits<double>::quiet_NaN(), kSentinel);
  dispatch_forward(in, out.tensor, EmulatedForward{});
  return out.checked("the output");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_emulated(
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
  const Guarded grad_value(in.value.sizes(), in.loc.options(), 0.0, kSentinel);
  const Guarded grad_loc(in.loc.sizes(), in.loc.options(), 0.0, kSentinel);
  const Guarded grad_attn(in.attn.sizes(), in.attn.options(), 0.0, kSentinel);
  dispatch_backward(in, grad_output, grad_value.tensor, grad_loc.tensor, grad_attn.tensor,
                    EmulatedBackward{});
  return {grad_value.checked("the value gradient").to(in.value.scalar_type()),
          grad_loc.checked("the location gradient"),
          grad_attn.checked("the attention weight gradient")};
}

// The launch plan for a value of `value`'s dtype whose tensors all start where `value` does.
std::tuple<int64_t, int64_t, int64_t> plan_emulated(const at::Tensor& value, int64_t queries) {
  const Dims d{value.size(0), value.size(1), value.size(2), value.size(3), queries, 1, 1};
  LaunchPlan plan{};
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "msda_plan_emulated", [&] {
        plan = kernels::plan_launch<scalar_t>(d, {value.const_data_ptr()});
      });
  return {plan.width, plan.lanes, plan.blocks};
}

}  // namespace
}  // namespace visionforge_msda

TORCH_LIBRARY(visionforge_msda_emulated, m) {
  m.def(
      "forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor, Tensor, Tensor)");
  m.def("plan(Tensor value, int queries) -> (int, int, int)");
}

TORCH_LIBRARY_IMPL(visionforge_msda_emulated, CPU, m) {
  m.impl("forward", &visionforge_msda::forward_emulated);
  m.impl("backward", &visionforge_msda::backward_emulated);
  m.impl("plan", &visionforge_msda::plan_emulated);
}
