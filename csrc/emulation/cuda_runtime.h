// Host emulation of the CUDA runtime: the part csrc/cuda_kernel.cu and csrc/cuda_step.cpp use,
// so that a C++ compiler builds both unchanged and their kernels run on the CPU
// (tests/cuda_emulation.py builds it; docs/DESIGN.md section 6 says what it shows).
//
// A launch runs every block of the grid and every thread of each block one after another, on
// the calling thread (emulated_device.cpp). That is the kernel's result on a GPU only when its
// threads never communicate: no shared memory, barriers, warp shuffles or atomics. None of them
// is declared here, so a kernel that starts using one stops compiling in the emulation instead
// of giving a wrong answer; a warp's shuffles run only inside warp_lockstep
// (csrc/warp_lockstep.h), which runs the warp's lanes as fibers that meet at every shuffle.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

// Qualifiers: on the host every function is a host function.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __grid_constant__
#define __launch_bounds__(...)

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The built-in variables of the thread the emulation is running, per OS thread.
inline thread_local uint3 threadIdx{};
inline thread_local uint3 blockIdx{};
inline thread_local dim3 blockDim{};
inline thread_local dim3 gridDim{};

typedef struct CUstream_st* cudaStream_t;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNotSupported = 801,
};

enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };

struct cudaFuncAttributes {
  size_t localSizeBytes = 0;
  int numRegs = 0;
};

namespace tmsgd::emulation {

// The emulated device's answers and the record of its launches (emulated_device.cpp).
int multiprocessors();
int resident_blocks();
int current_device();
void set_current_device(int device);
cudaStream_t current_stream(int device);
cudaError_t take_last_error();
cudaError_t last_error();

// Checks a launch's configuration as the driver would (an error is kept for cudaGetLastError
// and nothing runs), records it, and runs `thread` for every (block, thread) of an accepted one.
void launch(const std::string& kernel, dim3 grid, dim3 block, size_t shared, cudaStream_t stream,
            size_t parameter_bytes, const std::function<void()>& thread);

std::string demangle(const char* name);

// A launch `kernel<<<grid, block, shared, stream>>>(arguments...)`, spelled
// `Launch(kernel, grid, block, shared, stream)(arguments...)`.
template <typename... Parameters>
class Launch {
 public:
  Launch(void (*kernel)(Parameters...), dim3 grid, dim3 block, size_t shared, cudaStream_t stream)
      : kernel_(kernel), grid_(grid), block_(block), shared_(shared), stream_(stream) {}

  template <typename... Arguments>
  void operator()(Arguments&&... arguments) const {
    // The arguments are converted to the parameters' types and copied once, as a launch copies
    // them into the kernel's parameter space; every thread then reads that one copy.
    const std::tuple<std::decay_t<Parameters>...> parameters(
        std::forward<Arguments>(arguments)...);
    launch(demangle(typeid(kernel_).name()), grid_, block_, shared_, stream_,
           (sizeof(std::decay_t<Parameters>) + ... + 0),
           [&]() { std::apply(kernel_, parameters); });
  }

 private:
  void (*kernel_)(Parameters...);
  dim3 grid_, block_;
  size_t shared_;
  cudaStream_t stream_;
};

}  // namespace tmsgd::emulation

// csrc/cuda_kernel.cu launches through this macro; under nvcc it is the <<<...>>> launch.
#define TMSGD_LAUNCH(grid, block, shared, stream, ...) \
  ::tmsgd::emulation::Launch(__VA_ARGS__, grid, block, shared, stream)

template <typename Kernel>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, Kernel, int, size_t) {
  *blocks = tmsgd::emulation::resident_blocks();
  return cudaSuccess;
}

// There is no compiled kernel on the host to describe (registers, local memory).
template <typename Kernel>
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes*, Kernel) {
  return cudaErrorNotSupported;
}

inline cudaError_t cudaGetDevice(int* device) {
  *device = tmsgd::emulation::current_device();
  return cudaSuccess;
}

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int) {
  if (attribute != cudaDevAttrMultiProcessorCount) {
    return cudaErrorInvalidValue;
  }
  *value = tmsgd::emulation::multiprocessors();
  return cudaSuccess;
}

inline cudaError_t cudaGetLastError() { return tmsgd::emulation::take_last_error(); }
inline cudaError_t cudaPeekAtLastError() { return tmsgd::emulation::last_error(); }

inline const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNotSupported: return "operation not supported";
  }
  return "unknown error";
}
