// The CPU kernel's interface: a bucket described by raw pointers, and one entry point per CPU
// capability (each compiled from cpu_kernel_impl.h with its own instruction-set flags).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "tmsgd_update.h"

namespace tmsgd::cpu {

// One bucket: param i owns elements [offsets[i], offsets[i + 1]) of the history rows and of the
// momentum buffer. All params share one dtype; grads have the params' dtype.
struct CpuBucket {
  int64_t count = 0;                     // number of params
  const int64_t* offsets = nullptr;      // count + 1 prefix sums of numel
  void* const* params = nullptr;
  const void* const* grads = nullptr;
  void* history_d2 = nullptr;            // row `parity` of history: read as d2, receives d_new
  const void* history_d1 = nullptr;      // row 1 - parity
  void* momentum = nullptr;              // [N] in the params' dtype, or null
  c10::ScalarType param_dtype = c10::ScalarType::Float;
  c10::ScalarType history_dtype = c10::ScalarType::Float;
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

#define TMSGD_DECLARE_CAPABILITY(CAP)                                          \
  namespace CAP {                                                              \
  void step_vectorized(const CpuBucket& bucket, const StepScalars<float>& s);  \
  void step_vectorized(const CpuBucket& bucket, const StepScalars<double>& s); \
  }

TMSGD_DECLARE_CAPABILITY(DEFAULT)
TMSGD_DECLARE_CAPABILITY(AVX2)
TMSGD_DECLARE_CAPABILITY(AVX512)
#undef TMSGD_DECLARE_CAPABILITY

namespace DEFAULT {
// Every (param, history) dtype pair, element by element (the pairs without a SIMD path).
void step_scalar(const CpuBucket& bucket, const StepScalars<float>& s);
void step_scalar(const CpuBucket& bucket, const StepScalars<double>& s);
}  // namespace DEFAULT

}  // namespace tmsgd::cpu
