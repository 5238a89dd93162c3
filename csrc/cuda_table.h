// What the host passes to the CUDA kernels, by value, as kernel parameters: a table of up to
// kMaxTensors params with per-tensor pointers (one step launch per table), the call's scalars,
// and a table of count pointers for the kernel that advances the counts.
// Light for nvcc (no torch headers): included by both cuda_step.cpp and cuda_kernel.cu.
#pragma once

#include <cstdint>

#include "tmsgd_update.h"

namespace tmsgd::cuda {

// Kernel parameters stay within 4 KB, the limit every toolkit and GPU accepts (CUDA >= 12.1
// allows 32 KB on Volta and newer, but a larger table mostly saves launches that cost a few
// microseconds each). 60 tensors: CudaTable is 8 + 60 * 64 = 3848 bytes, KernelScalars<double>
// 112, together 3960 (static_assert below). ResNet-50's 161 tensors take three launches.
constexpr int kMaxTensors = 60;

// Elements per chunk: a block steps one chunk at a time (grid-stride over all chunks).
constexpr int64_t kChunk = 16384;

struct CudaTable {
  int64_t count = 0;  // tensors in this launch, none of them empty
  void* params[kMaxTensors];
  const void* grads[kMaxTensors];
  void* delta_even[kMaxTensors];
  void* delta_odd[kMaxTensors];
  void* momentum[kMaxTensors];        // null without momentum
  const int64_t* steps[kMaxTensors];  // the tensor's count on the device; null in host mode
  int64_t numel[kMaxTensors];
  int64_t chunk_end[kMaxTensors];     // tensor t owns chunks [chunk_end[t - 1], chunk_end[t])
};

// The step's scalars as the kernels receive them, for opmath T, built on the host: the kernel
// reads them from its parameter space as they are, with no per-thread conversion from double.
template <typename T>
struct KernelScalars {
  // StepScalars in T. Host mode: with the count flags every tensor of the launch shares.
  UpdateScalars<T> scalars;
  const T* lr_tensor = nullptr;      // on the device: replaces scalars.lr; null: not given there
  const T* grad_scale = nullptr;     // on the device: replaces scalars.grad_scale
  const float* found_inf = nullptr;  // on the device, or null (then decided on the host)
  // Device mode: every block sets the count flags from its tensor's count (CudaTable::steps).
  bool counts_on_device = false;
  int64_t switch_step = 0;
};

static_assert(sizeof(CudaTable) + sizeof(KernelScalars<double>) <= 4096,
              "step kernel parameters over 4 KB");

// An 8-bit history (tmsgd_kernels/int8_history.py): each param's rows (dim-0 slices, consecutive
// in memory) are cut into blocks of kInt8Block elements, the last one of a row possibly short,
// with one fp32 scale per block in each slot. One warp steps one block (kInt8Block / 32 elements
// per lane) and finds its absmax by warp shuffles; a CUDA block steps a chunk of
// kInt8BlocksPerChunk blocks. Per tensor the table also holds both slots' scales, an 8-bit
// momentum buffer's scales, the row length and the number of blocks: 8 + 40 * 96 = 3848 bytes,
// 3960 with KernelScalars<double>.
constexpr int kMaxInt8Tensors = 40;
constexpr int64_t kInt8Block = 256;
constexpr int64_t kInt8BlocksPerChunk = 64;

struct Int8Table {
  int64_t count = 0;  // tensors in this launch, none without blocks
  void* params[kMaxInt8Tensors];
  const void* grads[kMaxInt8Tensors];
  void* delta_even[kMaxInt8Tensors];  // int8 codes
  void* delta_odd[kMaxInt8Tensors];
  float* even_scales[kMaxInt8Tensors];  // (rows, blocks per row), row-major
  float* odd_scales[kMaxInt8Tensors];
  void* momentum[kMaxInt8Tensors];         // param dtype, or int8 codes (Buffer::kInt8)
  float* momentum_scales[kMaxInt8Tensors];  // int8 codes' scales, laid out like even_scales
  const int64_t* steps[kMaxInt8Tensors];
  int64_t per_row[kMaxInt8Tensors];    // elements per row
  int64_t blocks[kMaxInt8Tensors];     // rows * blocks per row
  int64_t chunk_end[kMaxInt8Tensors];  // tensor t owns chunks [chunk_end[t - 1], chunk_end[t])
};

static_assert(sizeof(Int8Table) + sizeof(KernelScalars<double>) <= 4096,
              "8-bit history kernel parameters over 4 KB");

// The counts the increment kernel advances, one thread each: 8 + 480 * 8 bytes, plus found_inf.
constexpr int kMaxCounts = 480;

struct CountTable {
  int64_t count = 0;
  int64_t* steps[kMaxCounts];
};

static_assert(sizeof(CountTable) + sizeof(void*) <= 4096, "count kernel parameters over 4 KB");

// Dtype codes of the launcher (mirrors of c10::ScalarType, without its header in nvcc's way).
enum class Dtype { kFloat, kDouble, kHalf, kBFloat16 };

// The device a call launches on (the current one).
struct Device {
  int index;
  int multiprocessors;
};

// float args for fp32 / fp16 / bf16 params, double args for fp64 params.
void launch_step(const CudaTable& table, const KernelScalars<float>& args, Dtype param,
                 Dtype history, bool momentum, const Device& device, void* stream);
void launch_step(const CudaTable& table, const KernelScalars<double>& args, Dtype param,
                 Dtype history, bool momentum, const Device& device, void* stream);

// What the compiled step kernel of one instantiation needs, and what it therefore gets, on the
// current device (tests, bench/gpu_check): registers per thread, local memory per thread, and
// blocks of 256 threads resident per SM (the grid's unit, see launch_step).
struct KernelResources {
  int registers;
  int64_t local_bytes;
  int resident_blocks;
};
KernelResources step_kernel_resources(Dtype param, Dtype history, bool momentum);
void launch_increment(const CountTable& table, const float* found_inf, void* stream);
// The momentum buffer of an 8-bit history launch: none, in the param dtype, or int8 codes with
// block scales like the history's (momentum_dtype=torch.int8).
enum class Buffer { kNone, kParam, kInt8 };

// The 8-bit history step (fp32, fp16 and bf16 params: float opmath only).
void launch_int8_step(const Int8Table& table, const KernelScalars<float>& args, Dtype param,
                      Buffer buffer, const Device& device, void* stream);

}  // namespace tmsgd::cuda
