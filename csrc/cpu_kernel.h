// The CPU kernel's interface: one call's tensors as raw pointers, and one entry point per CPU
// capability (each compiled from cpu_kernel_impl.h with its own instruction-set flags).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "tmsgd_update.h"

namespace tmsgd::cpu {

// One param and its state. Every pointer addresses numel elements stepped as one flat range:
// the op's checks give all of a param's tensors the param's dense layout.
template <typename T>
struct CpuTensor {
  void* param = nullptr;
  const void* grad = nullptr;     // in the params' dtype
  void* d2 = nullptr;             // history slot `parity` of this param's count: read as d2,
                                  // then overwritten with d_new
  const void* d1 = nullptr;       // the other slot
  void* momentum = nullptr;       // in the params' dtype (int8 codes: CpuCall::int8_momentum);
                                  // null when the call has no momentum
  UpdateScalars<T> scalars;       // the call's scalars with this tensor's count set
  // An 8-bit history (CpuCall::int8_history): d2 and d1 hold int8 codes, these their slots' block
  // scales (one per block of 256 elements of a row, row-major), a row being per_row elements.
  float* d2_scales = nullptr;
  const float* d1_scales = nullptr;
  int64_t per_row = 0;
  // An 8-bit momentum buffer (CpuCall::int8_momentum): its block scales, shaped as the history's.
  float* momentum_scales = nullptr;
};

// One call: tensor i owns elements [offsets[i], offsets[i + 1]) of the call's element range, the
// range at::parallel_for splits among threads; with an 8-bit history the range counts blocks of
// the history instead, so that no block is split between threads.
template <typename T>
struct CpuCall {
  int64_t count = 0;
  const int64_t* offsets = nullptr;  // count + 1 prefix sums of numel (of blocks: int8 history)
  const CpuTensor<T>* tensors = nullptr;
  bool momentum = false;
  c10::ScalarType param_dtype = c10::ScalarType::Float;
  c10::ScalarType history_dtype = c10::ScalarType::Float;
  bool int8_history = false;
  bool int8_momentum = false;  // momentum buffers as int8 codes (only with int8_history)
};

// True when (param dtype, history dtype) has a SIMD path; other pairs take the scalar path.
inline bool has_vector_path(c10::ScalarType param, c10::ScalarType history) {
  using c10::ScalarType;
  auto reduced_or_float = [](ScalarType t) {
    return t == ScalarType::Float || t == ScalarType::BFloat16 || t == ScalarType::Half;
  };
  if (param == ScalarType::Double) {
    return history == ScalarType::Double;
  }
  return reduced_or_float(param) && reduced_or_float(history);
}

#define TMSGD_DECLARE_CAPABILITY(CAP)             \
  namespace CAP {                                 \
  void step_vectorized(const CpuCall<float>& c);  \
  void step_vectorized(const CpuCall<double>& c); \
  void step_int8(const CpuCall<float>& c);        \
  }

TMSGD_DECLARE_CAPABILITY(DEFAULT)
TMSGD_DECLARE_CAPABILITY(AVX2)
TMSGD_DECLARE_CAPABILITY(AVX512)
#undef TMSGD_DECLARE_CAPABILITY

namespace DEFAULT {
// Every (param, history) dtype pair, element by element (the pairs without a SIMD path).
void step_scalar(const CpuCall<float>& c);
void step_scalar(const CpuCall<double>& c);
}  // namespace DEFAULT

}  // namespace tmsgd::cpu
