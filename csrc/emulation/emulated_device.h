// The emulated CUDA device's settings and its record of launches, for the helper ops
// (fake_cuda.cpp); the CUDA code reaches the device only through the runtime shim
// (cuda_runtime.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tmsgd::emulation {

// Blocks of every kernel resident on one multiprocessor, as the occupancy query reports them.
// Fixed: cuda_kernel.cu asks once per device and kernel and keeps the answer.
constexpr int kResidentBlocks = 2;

// The order in which a launch runs its blocks. A kernel whose result depends on it has blocks
// that read what other blocks write, which no launch order on a GPU guarantees.
enum class BlockOrder { kInOrder, kReversed, kShuffled };

// `multiprocessors` sizes the grids cuda_kernel.cu asks for; `seed` starts the shuffles.
void configure(int multiprocessors, BlockOrder order, uint64_t seed);

struct LaunchRecord {
  std::string kernel;  // the kernel's type: its parameter list
  unsigned grid[3];
  unsigned block[3];
  size_t shared;
  size_t parameter_bytes;
  int device;            // the current device at the launch
  bool current_stream;   // launched on that device's current stream
  bool ran;              // the configuration was valid, so every thread ran
};

// The launches since the last call, oldest first.
std::vector<LaunchRecord> take_launches();

}  // namespace tmsgd::emulation
