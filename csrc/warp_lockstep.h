// Warp-synchronous code for the CUDA kernels: `warp_lockstep(body)` runs `body` on every thread
// of a warp, which may exchange values by `__shfl_xor_sync`. Under nvcc that is simply body():
// the hardware runs the warp's 32 lanes together.
//
// The host emulation (csrc/emulation, tests/cuda_emulation.py) runs a block's threads one after
// another, so a shuffle, which needs every lane's value at once, cannot run as is; its shim
// declares no shuffle for that reason. Here the thread of a warp's lane 0 runs all 32 lanes as
// cooperative fibers (ucontext), lane by lane to the next shuffle; when every lane waits there
// the values are exchanged and the lanes resume; the other threads of the warp return at once.
// A lane that finishes while others wait, lanes at different shuffles, a partial mask or a
// shuffle outside warp_lockstep stop the process: on a GPU they would be undefined behaviour.
#pragma once

#ifdef __CUDACC__

template <typename Body>
__device__ __forceinline__ void warp_lockstep(Body&& body) {
  body();
}

#else  // the host emulation

#include <c10/util/Exception.h>
#include <cuda_runtime.h>
#include <ucontext.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

namespace tmsgd::emulation::warp {

constexpr int kLanes = 32;
// Lane stacks: the kernels' frames are small; AddressSanitizer's are several times larger.
constexpr size_t kStackBytes = 256 * 1024;

struct Lane {
  ucontext_t context;
  bool done = false;
  int64_t shuffles = 0;  // shuffles this lane has entered
  int lane_mask = 0;
  float posted = 0.0f;
  float received = 0.0f;
};

struct Warp {
  ucontext_t scheduler;
  std::array<Lane, kLanes> lanes;
  int current = 0;
  const std::function<void()>* body = nullptr;
#if defined(__SANITIZE_ADDRESS__)
  const void* scheduler_stack = nullptr;
  size_t scheduler_stack_size = 0;
#endif
};

// The warp the calling OS thread is running, if any.
inline thread_local Warp* active = nullptr;

// Lane stacks, allocated once per OS thread and reused by every warp it runs.
inline std::vector<std::unique_ptr<char[]>>& stacks() {
  static thread_local std::vector<std::unique_ptr<char[]>> kept;
  while (kept.size() < kLanes) {
    kept.push_back(std::make_unique<char[]>(kStackBytes));
  }
  return kept;
}

// Switches from `from` to `to`; the sanitizer is told which stack runs next.
inline void switch_to(ucontext_t* from, ucontext_t* to, const void* stack, size_t size) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, stack, size);
  swapcontext(from, to);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  (void)stack;
  (void)size;
  swapcontext(from, to);
#endif
}

inline void to_scheduler(Warp& w) {
#if defined(__SANITIZE_ADDRESS__)
  switch_to(&w.lanes[w.current].context, &w.scheduler, w.scheduler_stack,
            w.scheduler_stack_size);
#else
  switch_to(&w.lanes[w.current].context, &w.scheduler, nullptr, 0);
#endif
}

inline void lane_entry() {
  Warp& w = *active;
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(nullptr, &w.scheduler_stack, &w.scheduler_stack_size);
#endif
  (*w.body)();
  w.lanes[w.current].done = true;
  to_scheduler(w);  // never resumed
}

// Runs `body` for the 32 lanes of the warp whose lane 0 is the calling thread.
inline void run_warp(const std::function<void()>& body) {
  TORCH_CHECK(blockDim.x % kLanes == 0 && blockDim.y == 1 && blockDim.z == 1,
              "host emulation: warp_lockstep needs one-dimensional blocks of whole warps");
  TORCH_CHECK(active == nullptr, "host emulation: warp_lockstep inside warp_lockstep");
  Warp w;
  w.body = &body;
  std::vector<std::unique_ptr<char[]>>& stack = stacks();
  for (int l = 0; l < kLanes; ++l) {
    ucontext_t& c = w.lanes[l].context;
    getcontext(&c);
    c.uc_stack.ss_sp = stack[l].get();
    c.uc_stack.ss_size = kStackBytes;
    c.uc_link = nullptr;
    makecontext(&c, lane_entry, 0);
  }
  const unsigned base = threadIdx.x;
  active = &w;
  while (true) {
    for (int l = 0; l < kLanes; ++l) {
      if (!w.lanes[l].done) {
        w.current = l;
        threadIdx.x = base + l;
        switch_to(&w.scheduler, &w.lanes[l].context, stack[l].get(), kStackBytes);
      }
    }
    // Every lane is done, or waits at a shuffle.
    int done = 0;
    for (const Lane& lane : w.lanes) {
      done += lane.done;
    }
    if (done == kLanes) {
      break;
    }
    const Lane& first = w.lanes[0];
    bool agree = done == 0;
    for (const Lane& lane : w.lanes) {
      agree = agree && lane.shuffles == first.shuffles && lane.lane_mask == first.lane_mask;
    }
    if (!agree) {
      active = nullptr;
      threadIdx.x = base;
      TORCH_CHECK(false, "host emulation: the lanes of a warp do not meet at one shuffle (",
                  done, " of 32 lanes finished): undefined behaviour on a GPU");
    }
    for (int l = 0; l < kLanes; ++l) {
      w.lanes[l].received = w.lanes[l ^ first.lane_mask].posted;
    }
  }
  active = nullptr;
  threadIdx.x = base;
}

}  // namespace tmsgd::emulation::warp

template <typename Body>
inline void warp_lockstep(Body&& body) {
  if (threadIdx.x % tmsgd::emulation::warp::kLanes != 0) {
    return;  // run by the warp's lane 0
  }
  const std::function<void()> run = [&body]() { body(); };
  tmsgd::emulation::warp::run_warp(run);
}

// The one shuffle the kernels use: `value` of lane (this lane ^ lane_mask), full warps only.
inline float __shfl_xor_sync(unsigned mask, float value, int lane_mask) {
  using namespace tmsgd::emulation::warp;
  if (active == nullptr || mask != 0xffffffffu || lane_mask < 0 || lane_mask >= kLanes) {
    std::abort();  // outside warp_lockstep, or a partial warp: no exception may cross a fiber
  }
  Warp& w = *active;
  Lane& me = w.lanes[w.current];
  me.posted = value;
  me.lane_mask = lane_mask;
  ++me.shuffles;
  to_scheduler(w);
  return me.received;
}

#endif  // __CUDACC__
