// The CUDA kernel of tmsgd_kernels::tmsgd_step: one multi-tensor launch per bucket (per table of
// kMaxTensors params), blocks striding over fixed-size chunks of every param, 16-byte vector
// loads and stores where every pointer of the chunk is aligned and a scalar loop where not,
// 64-bit element indices. The arithmetic is tmsgd_update.h, the same code the CPU kernel runs.
//
// Kept light for nvcc (no torch/ATen headers, one translation unit, 16 instantiations: param x
// history dtype; momentum is a uniform run-time branch inside the kernel).
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "cuda_table.h"
#include "tmsgd_update.h"

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

// Steps the n elements of one chunk (its pointers already offset to the chunk's start).
template <typename P, typename H, bool kMomentum, typename T>
__device__ inline void step_chunk(P* w, const P* g, H* d2, const H* d1, P* buf, int64_t n,
                                  const StepScalars<T>& s) {
  constexpr int kVec = 16 / sizeof(P);  // one 16-byte load of params per thread and iteration
  const bool vector = aligned<P, kVec>(w) && aligned<P, kVec>(g) && aligned<H, kVec>(d2) &&
                      aligned<H, kVec>(d1) && (!kMomentum || aligned<P, kVec>(buf));
  if (vector) {
    for (int64_t i = int64_t(threadIdx.x) * kVec; i < n; i += int64_t(kThreads) * kVec) {
      if (i + kVec > n) {  // the ragged end of the last chunk
        for (int64_t j = i; j < n; ++j) {
          step_element<kMomentum>(w, g, d2, d1, buf, j, s);
        }
        break;
      }
      Pack<P, kVec> wp = *reinterpret_cast<const Pack<P, kVec>*>(w + i);
      const Pack<P, kVec> gp = *reinterpret_cast<const Pack<P, kVec>*>(g + i);
      Pack<H, kVec> ap, bp;
      if (s.multistep) {  // the warm-up never reads the history
        ap = *reinterpret_cast<const Pack<H, kVec>*>(d1 + i);
        bp = *reinterpret_cast<const Pack<H, kVec>*>(d2 + i);
      }
      Pack<P, kVec> mp;
      if constexpr (kMomentum) {
        mp = *reinterpret_cast<const Pack<P, kVec>*>(buf + i);
      }
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        T wi = static_cast<T>(wp.v[k]);
        T mi = kMomentum ? static_cast<T>(mp.v[k]) : T(0);
        const T a = s.multistep ? static_cast<T>(ap.v[k]) : T(0);
        const T b = s.multistep ? static_cast<T>(bp.v[k]) : T(0);
        const T d_new = tmsgd_update<kMomentum>(wi, static_cast<T>(gp.v[k]), a, b, mi, s);
        wp.v[k] = static_cast<P>(wi);
        bp.v[k] = static_cast<H>(d_new);
        if constexpr (kMomentum) {
          mp.v[k] = static_cast<P>(mi);
        }
      }
      *reinterpret_cast<Pack<P, kVec>*>(w + i) = wp;
      *reinterpret_cast<Pack<H, kVec>*>(d2 + i) = bp;
      if constexpr (kMomentum) {
        *reinterpret_cast<Pack<P, kVec>*>(buf + i) = mp;
      }
    }
  } else {
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      step_element<kMomentum>(w, g, d2, d1, buf, i, s);
    }
  }
}

template <typename P, typename H>
__global__ void __launch_bounds__(kThreads)
    tmsgd_step_kernel(const __grid_constant__ CudaTable table, const CudaArgs args) {
  using T = OpMath<P>;
  if (args.found_inf != nullptr && *args.found_inf != 0.0f) {
    return;  // AMP found an inf/nan: nothing changes (the increment kernel skips too)
  }
  const T lr = args.lr != nullptr ? *static_cast<const T*>(args.lr) : static_cast<T>(args.lr_value);
  const T scale = args.grad_scale != nullptr ? *static_cast<const T*>(args.grad_scale) : T(1);
  const StepScalars<T> s = make_step_scalars<T>(
      *args.step, lr, static_cast<T>(args.b1), static_cast<T>(args.b2),
      static_cast<T>(args.momentum_factor), static_cast<T>(args.dampening),
      static_cast<T>(args.weight_decay), args.nesterov, args.maximize, args.switch_step,
      args.grad_scale != nullptr, scale);
  H* row0 = static_cast<H*>(args.history);
  H* d2_row = row0 + s.parity * args.history_row_stride;
  const H* d1_row = row0 + (1 - s.parity) * args.history_row_stride;
  P* momentum = static_cast<P*>(args.momentum);

  const int64_t chunks = table.first_chunk[table.count];
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    // The param owning this chunk: the last t with first_chunk[t] <= chunk (block-uniform).
    int64_t lo = 0, hi = table.count;
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (table.first_chunk[mid] <= chunk) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    const int64_t begin = (chunk - table.first_chunk[lo]) * kChunk;
    const int64_t numel = table.column[lo + 1] - table.column[lo];
    const int64_t n = numel - begin < kChunk ? numel - begin : kChunk;
    const int64_t col = table.column[lo] + begin;
    P* w = static_cast<P*>(table.params[lo]) + begin;
    const P* g = static_cast<const P*>(table.grads[lo]) + begin;
    if (momentum != nullptr) {
      step_chunk<P, H, true>(w, g, d2_row + col, d1_row + col, momentum + col, n, s);
    } else {
      step_chunk<P, H, false>(w, g, d2_row + col, d1_row + col, nullptr, n, s);
    }
  }
}

// Runs after every block of every launch of the step has read the old count (same stream).
__global__ void increment_step_kernel(int64_t* step, const float* found_inf) {
  if (found_inf == nullptr || *found_inf == 0.0f) {
    *step += 1;
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

}  // namespace

void launch_step(const CudaTable& table, const CudaArgs& args, Dtype param, Dtype history,
                 int grid, void* stream) {
  with_type(param, [&](auto p_tag) {
    with_type(history, [&](auto h_tag) {
      using P = decltype(p_tag);
      using H = decltype(h_tag);
      tmsgd_step_kernel<P, H><<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(table,
                                                                                        args);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void launch_increment(int64_t* step, const float* found_inf, void* stream) {
  increment_step_kernel<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(step, found_inf);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace tmsgd::cuda
