// Host emulation of c10/cuda/CUDAGuard.h: makes the device current for the guard's scope (the
// emulated device records it with every launch).
#pragma once

#include <c10/core/Device.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

namespace c10::cuda {

class CUDAGuard {
 public:
  explicit CUDAGuard(c10::Device device) : previous_(tmsgd::emulation::current_device()) {
    TORCH_CHECK(device.is_cuda(), "CUDAGuard (host emulation): ", device, " is not a CUDA device");
    tmsgd::emulation::set_current_device(device.has_index() ? device.index() : previous_);
  }
  ~CUDAGuard() { tmsgd::emulation::set_current_device(previous_); }
  CUDAGuard(const CUDAGuard&) = delete;
  CUDAGuard& operator=(const CUDAGuard&) = delete;

 private:
  int previous_;
};

}  // namespace c10::cuda
