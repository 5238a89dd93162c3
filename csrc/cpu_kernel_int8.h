// The CPU kernel with an 8-bit history (tmsgd_kernels/int8_history.py), compiled once per CPU
// capability as the end of cpu_kernel_impl.h. One memory pass: per block of 256 elements of a row
// it decodes both slots' codes into fp32 (code * scale), runs the float kernel's step_span on the
// block with fp32 history in L1-resident buffers (so d_new is the float kernel's, bit for bit),
// and encodes d_new over the d2 slot as the reference encoder does. at::parallel_for splits the
// call's blocks, never a block, among threads.

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "cpu_kernel.h"

namespace tmsgd::cpu::CPU_CAPABILITY {

constexpr int64_t kInt8Block = 256;
constexpr float kCodeMax = 127.0f;

// The fp32 values n codes stand for: code * scale, rounded once.
inline void decode_block(const int8_t* codes, float scale, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<float>(codes[i]) * scale;
  }
}

// The largest magnitude of n values; NaN if one is NaN, as torch.amax, so that a non-finite
// block gets a non-finite scale and decodes to non-finite values. Four independent maxima: one
// chain of dependent maxima cost about a tenth of the whole step (perf, AVX512 copy).
inline float absmax_of(const float* values, int64_t n) {
  using Vec = Vectorized<float>;
  constexpr int64_t kLanes = Vec::size();
  Vec m0(0.0f), m1(0.0f), m2(0.0f), m3(0.0f);
  int64_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    m0 = at::vec::maximum(m0, Vec::loadu(values + i).abs());
    m1 = at::vec::maximum(m1, Vec::loadu(values + i + kLanes).abs());
    m2 = at::vec::maximum(m2, Vec::loadu(values + i + 2 * kLanes).abs());
    m3 = at::vec::maximum(m3, Vec::loadu(values + i + 3 * kLanes).abs());
  }
  for (; i + kLanes <= n; i += kLanes) {
    m0 = at::vec::maximum(m0, Vec::loadu(values + i).abs());
  }
  alignas(64) float lanes[kLanes];
  at::vec::maximum(at::vec::maximum(m0, m1), at::vec::maximum(m2, m3)).store(lanes);
  float absmax = 0.0f;
  bool nan = false;
  for (const float lane : lanes) {
    absmax = std::max(absmax, lane);
    nan |= std::isnan(lane);
  }
  for (; i < n; ++i) {
    const float magnitude = std::abs(values[i]);
    absmax = std::max(absmax, magnitude);
    nan |= std::isnan(magnitude);
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : absmax;
}

// Stores n fp32 values as codes; returns their block's scale. scale = absmax / 127 (IEEE fp32
// division), code = clamp(round_half_even(x / scale), -127, 127): the reference encoder's
// operations, each rounded once, so the codes are its codes. An all-zero block (scale 0) and a
// non-finite one (whose scale alone makes every decoded value non-finite) get zero codes.
inline float encode_block(const float* values, int64_t n, int8_t* codes) {
  using Vec = Vectorized<float>;
  constexpr int64_t kLanes = Vec::size();
  const float scale = absmax_of(values, n) / kCodeMax;
  if (!(scale > 0.0f && scale <= FLT_MAX)) {
    std::fill(codes, codes + n, int8_t(0));
    return scale;
  }
  alignas(64) float rounded[kInt8Block];
  const Vec divisor(scale), low(-kCodeMax), high(kCodeMax);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    // round(): round half to even (the default rounding mode), as torch.round.
    at::vec::clamp((Vec::loadu(values + i) / divisor).round(), low, high).store(rounded + i);
  }
  for (; i < n; ++i) {
    rounded[i] = std::min(std::max(std::nearbyint(values[i] / scale), -kCodeMax), kCodeMax);
  }
  for (i = 0; i < n; ++i) {
    codes[i] = static_cast<int8_t>(rounded[i]);  // integral, within [-127, 127]: exact
  }
  return scale;
}

template <typename P, bool kMomentum>
void step_int8_typed(const CpuCall<float>& call) {
  const int64_t* offsets = call.offsets;
  // kGrain elements per task, in whole blocks.
  at::parallel_for(0, offsets[call.count], kGrain / kInt8Block, [&](int64_t begin, int64_t end) {
    alignas(64) float d1[kInt8Block];
    alignas(64) float d2[kInt8Block];  // d2 decoded, then d_new
    int64_t i = std::upper_bound(offsets, offsets + call.count + 1, begin) - offsets - 1;
    for (; i < call.count && offsets[i] < end; ++i) {
      const int64_t lo = std::max(begin, offsets[i]) - offsets[i];
      const int64_t hi = std::min(end, offsets[i + 1]) - offsets[i];
      if (hi <= lo) {
        continue;  // params without blocks
      }
      const CpuTensor<float>& t = call.tensors[i];
      const UpdateScalars<float>& s = t.scalars;
      const int64_t blocks_per_row = (t.per_row + kInt8Block - 1) / kInt8Block;
      for (int64_t b = lo; b < hi; ++b) {
        // Block b is block `b % blocks_per_row` of row `b / blocks_per_row`; its scale is
        // entry b of the row-major (rows, blocks_per_row) scales.
        const int64_t row = b / blocks_per_row;
        const int64_t in_row = (b - row * blocks_per_row) * kInt8Block;
        const int64_t start = row * t.per_row + in_row;
        const int64_t n = std::min(kInt8Block, t.per_row - in_row);
        int8_t* codes = static_cast<int8_t*>(t.d2) + start;
        if (s.multistep) {  // the warm-up never reads the history
          decode_block(static_cast<const int8_t*>(t.d1) + start, t.d1_scales[b], n, d1);
          decode_block(codes, t.d2_scales[b], n, d2);
        }
        step_span<P, float, kMomentum, true>(
            static_cast<P*>(t.param) + start, static_cast<const P*>(t.grad) + start, d2, d1,
            kMomentum ? static_cast<P*>(t.momentum) + start : nullptr, n, s);
        t.d2_scales[b] = encode_block(d2, n, codes);
      }
    }
  });
}

void step_int8(const CpuCall<float>& call) {
  with_type(call.param_dtype, [&](auto p_tag) {
    using P = decltype(p_tag);
    if constexpr (std::is_same_v<P, double>) {
      TORCH_CHECK(false, "tmsgd_step: internal error, fp64 params with an 8-bit history");
    } else if (call.momentum) {
      step_int8_typed<P, true>(call);
    } else {
      step_int8_typed<P, false>(call);
    }
  });
}

}  // namespace tmsgd::cpu::CPU_CAPABILITY
