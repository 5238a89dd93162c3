// Host emulation of c10/cuda/CUDAStream.h: one stream per device, the current one.
#pragma once

#include <c10/core/Device.h>
#include <cuda_runtime.h>

namespace c10::cuda {

class CUDAStream {
 public:
  explicit CUDAStream(int device) : device_(device) {}
  cudaStream_t stream() const { return tmsgd::emulation::current_stream(device_); }

 private:
  int device_;
};

inline CUDAStream getCurrentCUDAStream(c10::DeviceIndex device = -1) {
  return CUDAStream(device < 0 ? tmsgd::emulation::current_device() : device);
}

}  // namespace c10::cuda
