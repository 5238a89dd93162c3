// What the host passes to the CUDA kernel, by value, as kernel parameters: a table of up to
// kMaxTensors params (one launch per table) and the step's arguments as device pointers, so the
// step count, lr, grad_scale and found_inf are read on the device (CUDA-graph capturable).
// Plain C++ (no CUDA or torch headers): included by both cuda_step.cpp and cuda_kernel.cu.
#pragma once

#include <cstdint>

namespace tmsgd::cuda {

// 256 tensors fit every model we target in one launch (ResNet-50: 161, GPT-2 small: 148). The
// table is 256 * 32 + 16 bytes = 8 KB, within the 32 KB of kernel parameters that CUDA >= 12.1
// allows on Volta and newer (the 4 KB limit of older toolkits would hold about 110).
constexpr int kMaxTensors = 256;

// Elements per chunk: a block steps one chunk at a time (grid-stride over all chunks).
constexpr int64_t kChunk = 16384;

struct CudaTable {
  int64_t count = 0;                   // params in this launch
  void* params[kMaxTensors];
  const void* grads[kMaxTensors];
  int64_t column[kMaxTensors + 1];     // param i owns history / momentum columns
                                       // [column[i], column[i + 1])
  int64_t first_chunk[kMaxTensors + 1];  // param i owns chunks [first_chunk[i], first_chunk[i+1])
};

struct CudaArgs {
  void* history = nullptr;             // row 0 of the [2, N] history
  int64_t history_row_stride = 0;      // elements from row 0 to row 1
  void* momentum = nullptr;            // [N] in the params' dtype, or null
  const int64_t* step = nullptr;       // completed steps (read; incremented by a second kernel)
  const void* lr = nullptr;            // opmath-dtype lr on the device, or null: use lr_value
  double lr_value = 0;
  const void* grad_scale = nullptr;    // opmath-dtype scale, or null
  const float* found_inf = nullptr;    // float32, or null
  double b1 = 0, b2 = 0, momentum_factor = 0, dampening = 0, weight_decay = 0;
  int64_t switch_step = 0;
  bool nesterov = false, maximize = false;
};

// Dtype codes of the launcher (mirrors of c10::ScalarType, without its header in nvcc's way).
enum class Dtype { kFloat, kDouble, kHalf, kBFloat16 };

void launch_step(const CudaTable& table, const CudaArgs& args, Dtype param, Dtype history,
                 int grid, void* stream);
void launch_increment(int64_t* step, const float* found_inf, void* stream);

}  // namespace tmsgd::cuda
