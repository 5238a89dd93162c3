// The emulated CUDA device: what the runtime shim (cuda_runtime.h) asks of it, and the launch,
// which runs every thread of every block in turn on the calling thread.
#include "emulated_device.h"

#include <c10/util/Exception.h>
#include <cuda_runtime.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>

namespace tmsgd::emulation {

namespace {

constexpr int kDevices = 16;
// Kernel parameters above 4 KB need CUDA 12.1 and a Volta or newer GPU: refused, as by older
// toolkits, so that the design's 4 KB limit (csrc/cuda_table.h) is checked here.
constexpr size_t kParameterBytes = 4096;

struct Device {
  std::mutex mutex;  // launches may come from several host threads
  int multiprocessors = 132;
  BlockOrder order = BlockOrder::kInOrder;
  std::mt19937_64 shuffle{1};
  std::vector<LaunchRecord> launches;
};

Device& device() {
  static Device d;
  return d;
}

// CUDA keeps the current device and the last error per host thread.
thread_local int current = 0;
thread_local cudaError_t error = cudaSuccess;

// Addresses that stand for each device's current stream; never dereferenced.
char streams[kDevices];

bool valid(dim3 grid, dim3 block) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  return grid.x >= 1 && grid.x <= 0x7fffffffu && grid.y >= 1 && grid.y <= 65535 &&
         grid.z >= 1 && grid.z <= 65535 && threads >= 1 && threads <= 1024 && block.z <= 64;
}

std::vector<unsigned> block_order(unsigned blocks, Device& d) {
  std::vector<unsigned> order(blocks);
  std::iota(order.begin(), order.end(), 0u);
  if (d.order == BlockOrder::kReversed) {
    std::reverse(order.begin(), order.end());
  } else if (d.order == BlockOrder::kShuffled) {
    std::shuffle(order.begin(), order.end(), d.shuffle);
  }
  return order;
}

}  // namespace

int multiprocessors() { return device().multiprocessors; }
int resident_blocks() { return kResidentBlocks; }
int current_device() { return current; }

void set_current_device(int index) {
  TORCH_CHECK(index >= 0 && index < kDevices, "host emulation: no CUDA device ", index);
  current = index;
}

cudaStream_t current_stream(int index) {
  TORCH_CHECK(index >= 0 && index < kDevices, "host emulation: no CUDA device ", index);
  return reinterpret_cast<cudaStream_t>(&streams[index]);
}

cudaError_t take_last_error() {
  const cudaError_t e = error;
  error = cudaSuccess;
  return e;
}

cudaError_t last_error() { return error; }

std::string demangle(const char* name) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> readable(
      abi::__cxa_demangle(name, nullptr, nullptr, &status), std::free);
  return status == 0 ? std::string(readable.get()) : std::string(name);
}

void configure(int multiprocessors, BlockOrder order, uint64_t seed) {
  TORCH_CHECK(multiprocessors >= 1, "host emulation: multiprocessors must be positive, got ",
              multiprocessors);
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  d.multiprocessors = multiprocessors;
  d.order = order;
  d.shuffle.seed(seed);
}

std::vector<LaunchRecord> take_launches() {
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  return std::exchange(d.launches, {});
}

void launch(const std::string& kernel, dim3 grid, dim3 block, size_t shared, cudaStream_t stream,
            size_t parameter_bytes, const std::function<void()>& thread) {
  // Dynamic shared memory would need `extern __shared__`, which the emulation cannot give.
  TORCH_CHECK(shared == 0, "host emulation: a launch with dynamic shared memory (", shared,
              " bytes) cannot be emulated");
  Device& d = device();
  const std::lock_guard<std::mutex> lock(d.mutex);
  const bool ok = valid(grid, block) && parameter_bytes <= kParameterBytes;
  d.launches.push_back({kernel, {grid.x, grid.y, grid.z}, {block.x, block.y, block.z}, shared,
                        parameter_bytes, current, stream == current_stream(current), ok});
  if (!ok) {
    error = parameter_bytes <= kParameterBytes ? cudaErrorInvalidConfiguration
                                               : cudaErrorInvalidValue;
    return;
  }
  gridDim = grid;
  blockDim = block;
  const std::vector<unsigned> order = block_order(grid.x * grid.y * grid.z, d);
  for (const unsigned linear : order) {
    blockIdx = uint3{linear % grid.x, linear / grid.x % grid.y, linear / (grid.x * grid.y)};
    for (unsigned z = 0; z < block.z; ++z) {
      for (unsigned y = 0; y < block.y; ++y) {
        for (unsigned x = 0; x < block.x; ++x) {
          threadIdx = uint3{x, y, z};
          thread();
        }
      }
    }
  }
}

}  // namespace tmsgd::emulation
