// The CPU kernel body, compiled once per CPU capability: cpu_kernel_default.cpp (no extra flags)
// and cpu_capability/{avx2,avx512}.cpp (built by setup.py with -mavx2 / -mavx512* and
// -DCPU_CAPABILITY=...). Everything here lives in namespace tmsgd::cpu::CPU_CAPABILITY, as ATen's
// own per-capability kernels do, so the three copies never share a symbol.
//
// One pass over the whole call: at::parallel_for splits the call's element range [0, N) (all
// tensors end to end), and each thread walks the tensors its range touches, each with its own
// pointers and its own count-dependent scalars.

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <type_traits>

#include "cpu_kernel.h"

#ifndef CPU_CAPABILITY
#error "cpu_kernel_impl.h needs CPU_CAPABILITY (DEFAULT, AVX2 or AVX512)"
#endif

namespace tmsgd::cpu::CPU_CAPABILITY {

using at::vec::Vectorized;
using c10::BFloat16;
using c10::Half;

template <typename S>
constexpr bool kReduced = std::is_same_v<S, BFloat16> || std::is_same_v<S, Half>;

// Load / store 2 * Vectorized<T>::size() elements as two opmath vectors, converting the storage
// dtype (one Vectorized<BFloat16> holds exactly two Vectorized<float> worth of elements).
inline void load2(const float* p, Vectorized<float>& a, Vectorized<float>& b) {
  a = Vectorized<float>::loadu(p);
  b = Vectorized<float>::loadu(p + Vectorized<float>::size());
}
inline void load2(const double* p, Vectorized<double>& a, Vectorized<double>& b) {
  a = Vectorized<double>::loadu(p);
  b = Vectorized<double>::loadu(p + Vectorized<double>::size());
}
template <typename R, std::enable_if_t<kReduced<R>, int> = 0>
inline void load2(const R* p, Vectorized<float>& a, Vectorized<float>& b) {
  std::tie(a, b) = at::vec::convert_to_float<R>(Vectorized<R>::loadu(p));
}
inline void store2(float* p, const Vectorized<float>& a, const Vectorized<float>& b) {
  a.store(p);
  b.store(p + Vectorized<float>::size());
}
inline void store2(double* p, const Vectorized<double>& a, const Vectorized<double>& b) {
  a.store(p);
  b.store(p + Vectorized<double>::size());
}
template <typename R, std::enable_if_t<kReduced<R>, int> = 0>
inline void store2(R* p, const Vectorized<float>& a, const Vectorized<float>& b) {
  at::vec::convert_from_float<R>(a, b).store(p);
}

// Whether the (param P, history H) pair has a SIMD path for opmath T (cpu_kernel.h says the same).
template <typename P, typename H, typename T>
constexpr bool kVectorPair =
    std::is_same_v<T, float>
        ? ((std::is_same_v<P, float> || kReduced<P>) && (std::is_same_v<H, float> || kReduced<H>))
        : (std::is_same_v<P, double> && std::is_same_v<H, double>);

// Steps n consecutive elements of one param. d2 is read and receives d_new; d1 is only read.
template <typename P, typename H, bool kMomentum, bool kVector, typename T>
void step_span(P* w, const P* g, H* d2, const H* d1, P* buf, int64_t n,
               const UpdateScalars<T>& s) {
  int64_t i = 0;
  if constexpr (kVector) {
    using Vec = Vectorized<T>;
    constexpr int64_t kStep = 2 * Vec::size();
    const Vec zero(T(0));
    for (; i + kStep <= n; i += kStep) {
      Vec w0, w1, g0, g1;
      Vec a0 = zero, a1 = zero, b0 = zero, b1 = zero, m0 = zero, m1 = zero;
      load2(w + i, w0, w1);
      load2(g + i, g0, g1);
      if (s.multistep) {  // the warm-up never reads the history
        load2(d1 + i, a0, a1);
        load2(d2 + i, b0, b1);
      }
      if constexpr (kMomentum) {
        if (!s.first) {  // the first step assigns the buffer without reading it
          load2(buf + i, m0, m1);
        }
      }
      const Vec n0 = tmsgd_update<kMomentum>(w0, g0, a0, b0, m0, s);
      const Vec n1 = tmsgd_update<kMomentum>(w1, g1, a1, b1, m1, s);
      store2(w + i, w0, w1);
      store2(d2 + i, n0, n1);
      if constexpr (kMomentum) {
        store2(buf + i, m0, m1);
      }
    }
  }
  for (; i < n; ++i) {
    step_element<kMomentum>(w, g, d2, d1, buf, i, s);
  }
}

// 32K elements (at least 384 KB of traffic) per task keeps the parallel_for overhead small.
constexpr int64_t kGrain = 32768;

template <typename P, typename H, bool kMomentum, bool kVector, typename T>
void step_typed(const CpuCall<T>& call) {
  const int64_t* offsets = call.offsets;
  at::parallel_for(0, offsets[call.count], kGrain, [&](int64_t begin, int64_t end) {
    // The first tensor whose range ends after `begin`.
    int64_t i = std::upper_bound(offsets, offsets + call.count + 1, begin) - offsets - 1;
    for (; i < call.count && offsets[i] < end; ++i) {
      const int64_t lo = std::max(begin, offsets[i]) - offsets[i];
      const int64_t hi = std::min(end, offsets[i + 1]) - offsets[i];
      if (hi <= lo) {
        continue;  // empty tensors
      }
      const CpuTensor<T>& t = call.tensors[i];
      step_span<P, H, kMomentum, kVector>(
          static_cast<P*>(t.param) + lo, static_cast<const P*>(t.grad) + lo,
          static_cast<H*>(t.d2) + lo, static_cast<const H*>(t.d1) + lo,
          kMomentum ? static_cast<P*>(t.momentum) + lo : nullptr, hi - lo, t.scalars);
    }
  });
}

template <typename F>
void with_type(c10::ScalarType dtype, F&& f) {
  switch (dtype) {
    case c10::ScalarType::Float: return f(float{});
    case c10::ScalarType::Double: return f(double{});
    case c10::ScalarType::BFloat16: return f(BFloat16{});
    case c10::ScalarType::Half: return f(Half{});
    default: TORCH_CHECK(false, "tmsgd_step: unsupported dtype ", dtype);
  }
}

// Runs the (param, history) pairs for which kVectorPair equals kVector; the others are not
// instantiated here (the caller routes them to the other entry point).
template <bool kVector, typename T>
void dispatch(const CpuCall<T>& call) {
  with_type(call.param_dtype, [&](auto p_tag) {
    with_type(call.history_dtype, [&](auto h_tag) {
      using P = decltype(p_tag);
      using H = decltype(h_tag);
      constexpr bool kOpmathMatches = std::is_same_v<T, double> == std::is_same_v<P, double>;
      if constexpr (kOpmathMatches && kVectorPair<P, H, T> == kVector) {
        if (call.momentum) {
          step_typed<P, H, true, kVector>(call);
        } else {
          step_typed<P, H, false, kVector>(call);
        }
      } else {
        TORCH_CHECK(false, "tmsgd_step: internal error, dtype pair routed to the wrong path");
      }
    });
  });
}

void step_vectorized(const CpuCall<float>& call) {
  dispatch<true>(call);
}
void step_vectorized(const CpuCall<double>& call) {
  dispatch<true>(call);
}

#ifdef TMSGD_SCALAR_PATHS
void step_scalar(const CpuCall<float>& call) {
  dispatch<false>(call);
}
void step_scalar(const CpuCall<double>& call) {
  dispatch<false>(call);
}
#endif

}  // namespace tmsgd::cpu::CPU_CAPABILITY

#include "cpu_kernel_int8.h"
