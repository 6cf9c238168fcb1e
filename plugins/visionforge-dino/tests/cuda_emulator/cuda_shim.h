// CUDA's built-ins for the host compiler, so that the kernels of msda_cuda_kernels.cuh run on
// the CPU: one std::thread per lane of a group, thread-local block/thread indices, warp
// shuffles exchanged through the group and checked (mask, width, source lane), and atomics
// under a lock. Included before the kernels; see msda_emulator.cpp for the launcher.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(threads)

namespace cuda_emulator {

struct Index3 {
  unsigned int x = 0;
  unsigned int y = 0;
  unsigned int z = 0;
};

// The lanes of one group run together; a warp shuffle is a write, a barrier, a read and a
// barrier. A lane that returns, or fails, while others wait in a shuffle breaks the barrier
// (the kernel would hang or read garbage on a GPU), and every waiting lane then fails.
class Group {
 public:
  Group(int lanes, unsigned int first_lane) : lanes_(lanes), first_lane_(first_lane),
                                              slots_(static_cast<size_t>(lanes)) {}

  int lanes() const { return lanes_; }
  unsigned int first_lane() const { return first_lane_; }

  unsigned int mask() const {
    return lanes_ == 32 ? 0xffffffffu : ((1u << lanes_) - 1u) << first_lane_;
  }

  double exchange(unsigned int lane, double value, unsigned int source) {
    slots_[lane - first_lane_] = value;
    wait();
    const double read = slots_[source - first_lane_];
    wait();
    return read;
  }

  // Called when a lane returns from the kernel or fails: no later shuffle can complete.
  void leave() {
    const std::lock_guard<std::mutex> lock(mutex_);
    ++departed_;
    ready_.notify_all();
  }

 private:
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (departed_ > 0) {
      throw std::runtime_error(
          "lanes of a group diverged: a lane returned before a warp shuffle of the others");
    }
    const uint64_t generation = generation_;
    if (++arrived_ == lanes_) {
      arrived_ = 0;
      ++generation_;
      ready_.notify_all();
      return;
    }
    const bool released = ready_.wait_for(lock, std::chrono::seconds(20), [&] {
      return generation_ != generation || departed_ > 0;
    });
    if (generation_ == generation) {
      throw std::runtime_error(
          released ? "lanes of a group diverged: a lane returned before a warp shuffle of the others"
                   : "lanes of a group diverged: not all of them reached the same warp shuffle");
    }
  }

  const int lanes_;
  const unsigned int first_lane_;
  std::vector<double> slots_;
  std::mutex mutex_;
  std::condition_variable ready_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  int departed_ = 0;
};

inline thread_local Index3 thread_index;
inline thread_local Index3 block_index;
inline thread_local Index3 block_dim;
inline thread_local Group* group = nullptr;
inline std::mutex atomic_mutex;

}  // namespace cuda_emulator

#define threadIdx (::cuda_emulator::thread_index)
#define blockIdx (::cuda_emulator::block_index)
#define blockDim (::cuda_emulator::block_dim)

template <typename T>
T atomicAdd(T* address, T value) {
  const std::lock_guard<std::mutex> lock(cuda_emulator::atomic_mutex);
  const T old = *address;
  *address = old + value;
  return old;
}

// __shfl_xor_sync semantics: lane l reads lane l ^ lane_mask of its width-segment; a source past
// the segment returns the caller's own value. The emulator only runs the lanes of one group
// together, so the mask must name exactly them and every source must be one of them.
template <typename T>
T __shfl_xor_sync(unsigned int mask, T value, int lane_mask, int width) {
  cuda_emulator::Group* const group = cuda_emulator::group;
  const unsigned int lane = threadIdx.x % 32u;
  if (group == nullptr || mask != group->mask()) {
    throw std::runtime_error("warp shuffle with mask " + std::to_string(mask) +
                             " that does not name exactly the lanes of the calling group");
  }
  const unsigned int uwidth = static_cast<unsigned int>(width);
  if (width <= 0 || width > 32 || (uwidth & (uwidth - 1u)) != 0) {
    throw std::runtime_error("warp shuffle width " + std::to_string(width) +
                             " is not a power of two up to 32");
  }
  unsigned int source = lane ^ static_cast<unsigned int>(lane_mask);
  if (source >= (lane / uwidth + 1u) * uwidth) {
    source = lane;
  }
  if (source < group->first_lane() ||
      source >= group->first_lane() + static_cast<unsigned int>(group->lanes())) {
    throw std::runtime_error("warp shuffle reads lane " + std::to_string(source) +
                             ", outside the calling group");
  }
  return static_cast<T>(group->exchange(lane, static_cast<double>(value), source));
}
