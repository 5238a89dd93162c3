// Host emulation of c10/cuda/CUDAException.h: a failed runtime call is a c10::Error, as on a GPU.
#pragma once

#include <c10/util/Exception.h>
#include <cuda_runtime.h>

#define C10_CUDA_CHECK(EXPR)                                                                   \
  do {                                                                                         \
    const cudaError_t tmsgd_emulation_error = (EXPR);                                          \
    TORCH_CHECK(tmsgd_emulation_error == cudaSuccess, "CUDA error (host emulation): ",         \
                cudaGetErrorString(tmsgd_emulation_error));                                    \
  } while (0)

#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(cudaGetLastError())
