// The CUDA kernels of tmsgd_kernels::tmsgd_step: one multi-tensor launch per table of
// kMaxTensors params, blocks striding over fixed-size chunks of every tensor, 16-byte vector
// loads and stores where every pointer of the chunk is aligned and a scalar loop where not,
// 64-bit element indices; the 8-bit history's kernels (one warp per block of 256 elements of a
// row, the block's absmax by warp shuffles, warp_lockstep.h; a momentum buffer in the param dtype
// or, tmsgd_int8_momentum_kernel, in 8 bits like the history); and the kernel that advances the
// device-side counts. The arithmetic is tmsgd_update.h, the same code the CPU kernel runs.
//
// Kept light for nvcc (no torch/ATen headers, one translation unit). Instantiations: param x
// history dtype x momentum. Registers set the occupancy, hence:
//  - momentum is a template parameter, not a uniform run-time branch: with the branch both
//    bodies share one allocation (ptxas -v for sm_90, CUDA 13.0: 80 registers per thread for fp32,
//    against 40 / 48 for the two templates);
//  - the scalars arrive ready-made in T in the parameter space (KernelScalars<T>), not as
//    doubles converted per thread: that saved 6-8 registers;
//  - the count mode stays a run-time branch: as a template it saved 6 registers in host mode
//    but cost 12 more in device mode.
// cuobjdump of the sm_90 build (CUDA 13.0) reports 40 / 52 registers for fp32 params and history
// without / with momentum (6 / 4 resident blocks of 256 threads per SM), 39 / 46 for fp32 params
// with bf16 history, 48 / 64 for bf16 with bf16, up to 78 (3 blocks) for fp16 params with fp64
// history; tests/test_native_cuda_build.py keeps them. The grid is sized from what the runtime
// says fits (resident_blocks), never from an assumed occupancy.
//
// Built with --fmad=false (setup.py): no multiply-add contraction, as in the C++ and Triton
// kernels. The FFMA instructions left in the SASS belong to IEEE division (g / grad_scale), whose
// correctly rounded expansion uses them; the PTX holds no fma.
#if !defined(__CUDACC_VER_MAJOR__) || __CUDACC_VER_MAJOR__ * 100 + __CUDACC_VER_MINOR__ < 1107
#error "tmsgd_kernels needs CUDA 11.7 or newer to build its CUDA kernels (__grid_constant__)"
#endif

#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <type_traits>

#include "cuda_table.h"
#include "tmsgd_update.h"
#include "warp_lockstep.h"

// Launches are written TMSGD_LAUNCH(grid, block, shared, stream, kernel)(arguments): nvcc's
// <<<...>>> launch here. The host emulation (csrc/emulation/cuda_runtime.h) defines it as its
// own launcher, so a C++ compiler builds this file unchanged and runs the kernels on the CPU
// (tests/test_cuda_emulation.py). The kernel comes last: its template arguments hold commas.
#ifndef TMSGD_LAUNCH
#define TMSGD_LAUNCH(grid, block, shared, stream, ...) __VA_ARGS__<<<grid, block, shared, stream>>>
#endif

namespace tmsgd::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T, int N>
struct alignas(sizeof(T) * N < 16 ? sizeof(T) * N : 16) Pack {
  T v[N];
};

template <typename P>
using OpMath = std::conditional_t<std::is_same_v<P, double>, double, float>;

template <typename T, int N>
__device__ inline bool aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % alignof(Pack<T, N>) == 0;
}

template <typename T, int N>
__device__ inline Pack<T, N> load(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}

template <typename T, int N>
__device__ inline void store(T* p, const Pack<T, N>& v) {
  *reinterpret_cast<Pack<T, N>*>(p) = v;
}

// Steps the n elements of one chunk (its pointers already offset to the chunk's start).
template <typename P, typename H, bool kMomentum, typename T>
__device__ inline void step_chunk(P* w, const P* g, H* d2, const H* d1, P* buf, int64_t n,
                                  const UpdateScalars<T>& s) {
  constexpr int kVec = 16 / sizeof(P);  // one 16-byte load of params per thread and iteration
  const bool vector = aligned<P, kVec>(w) && aligned<P, kVec>(g) && aligned<H, kVec>(d2) &&
                      aligned<H, kVec>(d1) && (!kMomentum || aligned<P, kVec>(buf));
  if (!vector) {
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      step_element<kMomentum>(w, g, d2, d1, buf, i, s);
    }
    return;
  }
  for (int64_t i = int64_t(threadIdx.x) * kVec; i < n; i += int64_t(kThreads) * kVec) {
    if (i + kVec > n) {  // the ragged end of the last chunk
      for (int64_t j = i; j < n; ++j) {
        step_element<kMomentum>(w, g, d2, d1, buf, j, s);
      }
      break;
    }
    Pack<P, kVec> wp = load<P, kVec>(w + i);
    const Pack<P, kVec> gp = load<P, kVec>(g + i);
    Pack<H, kVec> ap, bp;
    if (s.multistep) {  // the warm-up never reads the history
      ap = load<H, kVec>(d1 + i);
      bp = load<H, kVec>(d2 + i);
    }
    Pack<P, kVec> mp;
    if (kMomentum && !s.first) {  // the first step assigns the buffer without reading it
      mp = load<P, kVec>(buf + i);
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      T wi = static_cast<T>(wp.v[k]);
      T mi = kMomentum && !s.first ? static_cast<T>(mp.v[k]) : T(0);
      const T a = s.multistep ? static_cast<T>(ap.v[k]) : T(0);
      const T b = s.multistep ? static_cast<T>(bp.v[k]) : T(0);
      const T d_new = tmsgd_update<kMomentum>(wi, static_cast<T>(gp.v[k]), a, b, mi, s);
      wp.v[k] = static_cast<P>(wi);
      bp.v[k] = static_cast<H>(d_new);
      if constexpr (kMomentum) {
        mp.v[k] = static_cast<P>(mi);
      }
    }
    store(w + i, wp);
    store(d2 + i, bp);
    if constexpr (kMomentum) {
      store(buf + i, mp);
    }
  }
}

// The table entry owning `chunk`: the first t with chunk < chunk_end[t] (block-uniform).
template <typename Table>
__device__ inline int64_t owner(const Table& table, int64_t chunk) {
  int64_t lo = 0, hi = table.count - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (table.chunk_end[mid] <= chunk) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

template <typename P, typename H, bool kMomentum>
__global__ void __launch_bounds__(kThreads)
    tmsgd_step_kernel(const __grid_constant__ CudaTable table,
                      const __grid_constant__ KernelScalars<OpMath<P>> args) {
  if (args.found_inf != nullptr && *args.found_inf != 0.0f) {
    return;  // AMP found an inf/nan: nothing changes (the increment kernel skips too)
  }
  UpdateScalars<OpMath<P>> s = args.scalars;
  if (args.lr_tensor != nullptr) {
    s.lr = *args.lr_tensor;
  }
  if (args.grad_scale != nullptr) {
    s.grad_scale = *args.grad_scale;
  }
  const int64_t chunks = table.chunk_end[table.count - 1];
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const int64_t t = owner(table, chunk);
    if (args.counts_on_device) {
      set_count(s, *table.steps[t], args.switch_step);
    }
    const int64_t chunk_begin = t == 0 ? 0 : table.chunk_end[t - 1];
    const int64_t begin = (chunk - chunk_begin) * kChunk;
    const int64_t n = table.numel[t] - begin < kChunk ? table.numel[t] - begin : kChunk;
    H* even = static_cast<H*>(table.delta_even[t]) + begin;
    H* odd = static_cast<H*>(table.delta_odd[t]) + begin;
    P* buf = kMomentum ? static_cast<P*>(table.momentum[t]) + begin : nullptr;
    step_chunk<P, H, kMomentum>(static_cast<P*>(table.params[t]) + begin,
                                static_cast<const P*>(table.grads[t]) + begin,
                                s.parity == 0 ? even : odd, s.parity == 0 ? odd : even, buf, n,
                                s);
  }
}

// ------------------------------------------------------------------------- 8-bit history

constexpr int kWarp = 32;
constexpr int kPerLane = static_cast<int>(kInt8Block) / kWarp;
constexpr float kCodeMax = 127.0f;

// Larger of two magnitudes; a NaN wins, as in torch.amax (and the CPU kernel).
__device__ inline float max_magnitude(float a, float b) {
  return (b > a || b != b) ? b : a;
}

// Stores one warp's block of fp32 values (lane l holds elements l, l + 32, ...; zeros past n)
// as the reference encoder does (int8_history.py): scale = absmax / 127 (absmax by shuffles;
// IEEE division, nvcc's default), code = clamp(round half to even(value / scale), -127, 127),
// zero codes for a zero or non-finite scale. Every lane must call it (the shuffles).
__device__ inline void encode_block(const float (&values)[kPerLane], int64_t n, int lane,
                                    int8_t* codes, float* scale_out) {
  float absmax = 0.0f;
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
    absmax = max_magnitude(absmax, fabsf(values[k]));
  }
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    absmax = max_magnitude(absmax, __shfl_xor_sync(0xffffffffu, absmax, offset));
  }
  const float scale = absmax / kCodeMax;
  const bool zero = !(scale > 0.0f && scale <= 3.402823466e38f);
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
    const int64_t i = lane + int64_t(k) * kWarp;
    if (i < n) {
      const float code = fminf(fmaxf(rintf(values[k] / scale), -kCodeMax), kCodeMax);
      codes[i] = zero ? int8_t(0) : static_cast<int8_t>(code);
    }
  }
  if (lane == 0) {
    *scale_out = scale;
  }
}

// One block of an 8-bit history, stepped by one warp: lane l owns elements l, l + 32, ...
// (coalesced). Reads both slots' codes (decoded code * scale), runs tmsgd_update in fp32 as the
// float kernels do, writes the param, then stores d_new over the d2 slot (encode_block). The
// momentum buffer is kBuffer: none, in the param dtype, or int8 codes with one scale per block
// like the history's; those are decoded the same way (not read on the first step) and the new
// buffer, which the step itself uses unrounded, is stored by encode_block too. Every lane takes
// part in every shuffle (the caller's loop is warp-uniform).
template <typename P, Buffer kBuffer>
__device__ inline void step_int8_block(const Int8Table& table, int64_t t, int64_t b, int lane,
                                       const UpdateScalars<float>& s) {
  constexpr bool kMomentum = kBuffer != Buffer::kNone;
  constexpr bool kCodes = kBuffer == Buffer::kInt8;
  const int64_t per_row = table.per_row[t];
  const int64_t blocks_per_row = (per_row + kInt8Block - 1) / kInt8Block;
  const int64_t row = b / blocks_per_row;
  const int64_t in_row = (b - row * blocks_per_row) * kInt8Block;
  const int64_t start = row * per_row + in_row;
  const int64_t n = per_row - in_row < kInt8Block ? per_row - in_row : kInt8Block;
  P* w = static_cast<P*>(table.params[t]) + start;
  const P* g = static_cast<const P*>(table.grads[t]) + start;
  P* buf = kBuffer == Buffer::kParam ? static_cast<P*>(table.momentum[t]) + start : nullptr;
  int8_t* buf_codes = kCodes ? static_cast<int8_t*>(table.momentum[t]) + start : nullptr;
  int8_t* even = static_cast<int8_t*>(table.delta_even[t]) + start;
  int8_t* odd = static_cast<int8_t*>(table.delta_odd[t]) + start;
  int8_t* d2 = s.parity == 0 ? even : odd;
  const int8_t* d1 = s.parity == 0 ? odd : even;
  float* d2_scales = s.parity == 0 ? table.even_scales[t] : table.odd_scales[t];
  const float* d1_scales = s.parity == 0 ? table.odd_scales[t] : table.even_scales[t];
  // The warm-up never reads the history, the first step never the buffer.
  const float scale1 = s.multistep ? d1_scales[b] : 0.0f;
  const float scale2 = s.multistep ? d2_scales[b] : 0.0f;
  const float buf_scale = kCodes && !s.first ? table.momentum_scales[t][b] : 0.0f;

  float d_new[kPerLane];
  float buf_new[kCodes ? kPerLane : 1];
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
    const int64_t i = lane + int64_t(k) * kWarp;
    d_new[k] = 0.0f;
    if constexpr (kCodes) {
      buf_new[k] = 0.0f;
    }
    if (i < n) {
      float wi = static_cast<float>(w[i]);
      float mi = 0.0f;
      if (kMomentum && !s.first) {
        mi = kCodes ? static_cast<float>(buf_codes[i]) * buf_scale : static_cast<float>(buf[i]);
      }
      const float a = s.multistep ? static_cast<float>(d1[i]) * scale1 : 0.0f;
      const float c = s.multistep ? static_cast<float>(d2[i]) * scale2 : 0.0f;
      d_new[k] = tmsgd_update<kMomentum>(wi, static_cast<float>(g[i]), a, c, mi, s);
      w[i] = static_cast<P>(wi);
      if constexpr (kCodes) {
        buf_new[k] = mi;
      } else if constexpr (kMomentum) {
        buf[i] = static_cast<P>(mi);
      }
    }
  }
  encode_block(d_new, n, lane, d2, d2_scales + b);
  if constexpr (kCodes) {
    encode_block(buf_new, n, lane, buf_codes, table.momentum_scales[t] + b);
  }
}

// Chunks of kInt8BlocksPerChunk blocks, grid-stride; within a chunk, each of the 8 warps takes
// every 8th block.
template <typename P, Buffer kBuffer>
__device__ inline void step_int8_chunks(const Int8Table& table, const KernelScalars<float>& args) {
  if (args.found_inf != nullptr && *args.found_inf != 0.0f) {
    return;  // AMP found an inf/nan: nothing changes (the increment kernel skips too)
  }
  warp_lockstep([&]() {
    UpdateScalars<float> s = args.scalars;
    if (args.lr_tensor != nullptr) {
      s.lr = *args.lr_tensor;
    }
    if (args.grad_scale != nullptr) {
      s.grad_scale = *args.grad_scale;
    }
    const int lane = static_cast<int>(threadIdx.x) % kWarp;
    const int warp = static_cast<int>(threadIdx.x) / kWarp;
    const int64_t chunks = table.chunk_end[table.count - 1];
    for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
      const int64_t t = owner(table, chunk);
      if (args.counts_on_device) {
        set_count(s, *table.steps[t], args.switch_step);
      }
      const int64_t first = (chunk - (t == 0 ? 0 : table.chunk_end[t - 1])) * kInt8BlocksPerChunk;
      const int64_t end = first + kInt8BlocksPerChunk < table.blocks[t]
                              ? first + kInt8BlocksPerChunk
                              : table.blocks[t];
      for (int64_t b = first + warp; b < end; b += kThreads / kWarp) {
        step_int8_block<P, kBuffer>(table, t, b, lane, s);
      }
    }
  });
}

// The 8-bit history kernel with a buffer in the param dtype (kMomentum) or none.
template <typename P, bool kMomentum>
__global__ void __launch_bounds__(kThreads)
    tmsgd_int8_kernel(const __grid_constant__ Int8Table table,
                      const __grid_constant__ KernelScalars<float> args) {
  step_int8_chunks<P, kMomentum ? Buffer::kParam : Buffer::kNone>(table, args);
}

// The 8-bit history kernel with an 8-bit momentum buffer (momentum_dtype=torch.int8), a kernel
// of its own name so that build checks tell its code (two encodings per block: twice the
// shuffles) from tmsgd_int8_kernel's. ptxas for sm_90 (CUDA 13.0): 74 registers, no spills, as
// tmsgd_int8_kernel without momentum (3 resident blocks of 256 threads per SM).
template <typename P>
__global__ void __launch_bounds__(kThreads)
    tmsgd_int8_momentum_kernel(const __grid_constant__ Int8Table table,
                               const __grid_constant__ KernelScalars<float> args) {
  step_int8_chunks<P, Buffer::kInt8>(table, args);
}

// Runs after every block of every step launch of the call has read the old counts (same stream).
__global__ void increment_counts_kernel(const __grid_constant__ CountTable table,
                                        const float* found_inf) {
  if (found_inf != nullptr && *found_inf != 0.0f) {
    return;
  }
  if (threadIdx.x < table.count) {
    *table.steps[threadIdx.x] += 1;
  }
}

template <typename F>
void with_type(Dtype dtype, F&& f) {
  switch (dtype) {
    case Dtype::kFloat: return f(float{});
    case Dtype::kDouble: return f(double{});
    case Dtype::kHalf: return f(c10::Half{});
    case Dtype::kBFloat16: return f(c10::BFloat16{});
  }
}

// Blocks of `kernel` resident on one SM of the current device, as the runtime computes it from
// the compiled kernel's registers; asked once per device and kernel (`known`, one per kernel).
constexpr int kDevices = 64;

template <typename Kernel>
int occupancy(Kernel kernel, int device, std::array<std::atomic<int>, kDevices>& known) {
  if (device >= 0 && device < kDevices) {
    const int blocks = known[device].load(std::memory_order_relaxed);
    if (blocks > 0) {
      return blocks;
    }
  }
  int blocks = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, 0));
  TORCH_CHECK(blocks > 0, "tmsgd_step: the step kernel fits no block on this GPU");
  if (device >= 0 && device < kDevices) {
    known[device].store(blocks, std::memory_order_relaxed);
  }
  return blocks;
}

template <typename P, typename H, bool kMomentum>
int resident_blocks(int device) {
  static std::array<std::atomic<int>, kDevices> known{};
  return occupancy(tmsgd_step_kernel<P, H, kMomentum>, device, known);
}

template <typename P, Buffer kBuffer>
int resident_int8_blocks(int device) {
  static std::array<std::atomic<int>, kDevices> known{};
  if constexpr (kBuffer == Buffer::kInt8) {
    return occupancy(tmsgd_int8_momentum_kernel<P>, device, known);
  } else {
    return occupancy(tmsgd_int8_kernel<P, kBuffer == Buffer::kParam>, device, known);
  }
}

template <typename P, typename H, bool kMomentum>
KernelResources resources_of(int device) {
  cudaFuncAttributes attributes{};
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attributes, tmsgd_step_kernel<P, H, kMomentum>));
  return {attributes.numRegs, static_cast<int64_t>(attributes.localSizeBytes),
          resident_blocks<P, H, kMomentum>(device)};
}

// Calls f(P{}, H{}, bool_constant<momentum>{}) for the run-time dtypes, opmath T's only.
template <typename T, typename F>
void with_instantiation(Dtype param, Dtype history, bool momentum, F&& f) {
  with_type(param, [&](auto p_tag) {
    using P = decltype(p_tag);
    if constexpr (std::is_same_v<OpMath<P>, T>) {
      with_type(history, [&](auto h_tag) {
        if (momentum) {
          f(p_tag, h_tag, std::true_type{});
        } else {
          f(p_tag, h_tag, std::false_type{});
        }
      });
    } else {
      TORCH_CHECK(false, "tmsgd_step: internal error, scalars of the wrong opmath dtype");
    }
  });
}

// One step launch: as many blocks as fit on the device at once (a grid-stride loop covers the
// rest), or one per chunk when there are fewer chunks.
template <typename T>
void launch_typed(const CudaTable& table, const KernelScalars<T>& args, Dtype param,
                  Dtype history, bool momentum, const Device& device, void* stream) {
  with_instantiation<T>(param, history, momentum, [&](auto p_tag, auto h_tag, auto m_tag) {
    using P = decltype(p_tag);
    using H = decltype(h_tag);
    constexpr bool kMomentum = decltype(m_tag)::value;
    const int64_t chunks = table.chunk_end[table.count - 1];
    const int64_t fit =
        int64_t(device.multiprocessors) * resident_blocks<P, H, kMomentum>(device.index);
    const int grid = static_cast<int>(chunks < fit ? chunks : fit);
    TMSGD_LAUNCH(grid, kThreads, 0, static_cast<cudaStream_t>(stream),
                 tmsgd_step_kernel<P, H, kMomentum>)(table, args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

void launch_step(const CudaTable& table, const KernelScalars<float>& args, Dtype param,
                 Dtype history, bool momentum, const Device& device, void* stream) {
  launch_typed(table, args, param, history, momentum, device, stream);
}

void launch_step(const CudaTable& table, const KernelScalars<double>& args, Dtype param,
                 Dtype history, bool momentum, const Device& device, void* stream) {
  launch_typed(table, args, param, history, momentum, device, stream);
}

KernelResources step_kernel_resources(Dtype param, Dtype history, bool momentum) {
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  KernelResources result{};
  auto ask = [&](auto p_tag, auto h_tag, auto m_tag) {
    result = resources_of<decltype(p_tag), decltype(h_tag), decltype(m_tag)::value>(device);
  };
  if (param == Dtype::kDouble) {
    with_instantiation<double>(param, history, momentum, ask);
  } else {
    with_instantiation<float>(param, history, momentum, ask);
  }
  return result;
}

void launch_int8_step(const Int8Table& table, const KernelScalars<float>& args, Dtype param,
                      Buffer buffer, const Device& device, void* stream) {
  with_type(param, [&](auto p_tag) {
    using P = decltype(p_tag);
    if constexpr (std::is_same_v<P, double>) {
      TORCH_CHECK(false, "tmsgd_step: internal error, fp64 params with an 8-bit history");
    } else {
      auto launch = [&](auto b_tag) {
        constexpr Buffer kBuffer = decltype(b_tag)::value;
        const int64_t chunks = table.chunk_end[table.count - 1];
        const int64_t fit =
            int64_t(device.multiprocessors) * resident_int8_blocks<P, kBuffer>(device.index);
        const int grid = static_cast<int>(chunks < fit ? chunks : fit);
        if constexpr (kBuffer == Buffer::kInt8) {
          TMSGD_LAUNCH(grid, kThreads, 0, static_cast<cudaStream_t>(stream),
                       tmsgd_int8_momentum_kernel<P>)(table, args);
        } else {
          TMSGD_LAUNCH(grid, kThreads, 0, static_cast<cudaStream_t>(stream),
                       tmsgd_int8_kernel<P, kBuffer == Buffer::kParam>)(table, args);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      switch (buffer) {
        case Buffer::kNone: return launch(std::integral_constant<Buffer, Buffer::kNone>{});
        case Buffer::kParam: return launch(std::integral_constant<Buffer, Buffer::kParam>{});
        case Buffer::kInt8: return launch(std::integral_constant<Buffer, Buffer::kInt8>{});
      }
    }
  });
}

void launch_increment(const CountTable& table, const float* found_inf, void* stream) {
  TMSGD_LAUNCH(1, kMaxCounts, 0, static_cast<cudaStream_t>(stream),
               increment_counts_kernel)(table, found_inf);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace tmsgd::cuda
