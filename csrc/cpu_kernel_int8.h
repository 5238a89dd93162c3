// The CPU kernel with an 8-bit history (tmsgd_kernels/int8_history.py), compiled once per CPU
// capability as the end of cpu_kernel_impl.h. Per block of 256 elements of a row, one loop reads
// the param, gradient, buffer and both slots' codes, decodes the codes in registers
// (code * scale), runs the float kernel's tmsgd_update on them (so d_new is the float kernel's,
// bit for bit), writes the param and buffer, and keeps d_new (1 KB, L1) and its absmax. The
// codes of d_new need the block's scale, so they are written by the next block's loop (its
// divisions then overlap that block's loads and arithmetic), or alone after a short block.
// at::parallel_for splits the call's blocks, never a block, among threads.
//
// Speed (bench/int8_cpu_speed.py): the step is bound by memory where the machine's bandwidth is
// low and by the instructions per element where it is high; the loop therefore converts codes
// with one widening load, keeps the absmax as an integer maximum and drops the scalar tests.

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/bit_cast.h>

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

// Vectorized<float>::size() codes as fp32 (exact: |code| <= 127). AVX2 and AVX512 widen the
// bytes with one sign extension and one conversion; elsewhere element by element.
inline Vectorized<float> load_codes(const int8_t* codes) {
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_cvtepi32_ps(
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes))));
#elif defined(CPU_CAPABILITY_AVX2)
  return _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes))));
#else
  alignas(64) float values[Vectorized<float>::size()];
  for (int64_t i = 0; i < Vectorized<float>::size(); ++i) {
    values[i] = static_cast<float>(codes[i]);
  }
  return Vectorized<float>::loadu(values);
#endif
}

// Stores ratios x / scale of a finite, positive scale as codes: round half to even (an explicit
// rounding mode, not the MXCSR's), then clamp to [-127, 127], as the reference encoder. |ratio|
// stays below 191 (|x| <= absmax and scale = absmax / 127 rounded once, at worst to a nearest
// subnormal), so the conversion to int32 never overflows, and every code fits an int8.
inline void store_codes(const Vectorized<float>& ratio, int8_t* codes) {
#if defined(CPU_CAPABILITY_AVX512)
  const __m512i integers =
      _mm512_cvt_roundps_epi32(ratio, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // The narrowing saturates at 127; the lower bound is -127, not -128.
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes),
                   _mm512_cvtsepi32_epi8(_mm512_max_epi32(integers, _mm512_set1_epi32(-127))));
#elif defined(CPU_CAPABILITY_AVX2)
  const __m256i integers = _mm256_max_epi32(
      _mm256_cvtps_epi32(_mm256_round_ps(ratio, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)),
      _mm256_set1_epi32(-127));
  // Both packs saturate: at 127 for the upper bound.
  const __m128i shorts = _mm_packs_epi32(_mm256_castsi256_si128(integers),
                                         _mm256_extracti128_si256(integers, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(codes), _mm_packs_epi16(shorts, shorts));
#else
  alignas(64) float rounded[Vectorized<float>::size()];
  // round(): half to even, as torch.round.
  at::vec::clamp(ratio.round(), Vectorized<float>(-kCodeMax), Vectorized<float>(kCodeMax))
      .store(rounded);
  for (int64_t i = 0; i < Vectorized<float>::size(); ++i) {
    codes[i] = static_cast<int8_t>(rounded[i]);
  }
#endif
}

// The largest magnitude of a block's values, NaN if one is NaN (as torch.amax), so that a
// non-finite block gets a non-finite scale. Tracked on the magnitudes' bit patterns as unsigned
// integers, whose order is the floats' for non-negative values and puts every NaN above inf: one
// integer maximum per vector keeps the NaN, where a float maximum drops it unless it also
// compares and merges.
class BlockAbsmax {
 public:
  void add(const Vectorized<float>& values) {
#if defined(CPU_CAPABILITY_AVX512)
    lanes_ = _mm512_max_epu32(lanes_, _mm512_castps_si512(values.abs()));
#elif defined(CPU_CAPABILITY_AVX2)
    lanes_ = _mm256_max_epu32(lanes_, _mm256_castps_si256(values.abs()));
#else
    alignas(64) float magnitudes[Vectorized<float>::size()];
    values.abs().store(magnitudes);
    for (const float magnitude : magnitudes) {
      add(magnitude);
    }
#endif
  }
  void add(float value) {
    bits_ = std::max(bits_, c10::bit_cast<uint32_t>(std::abs(value)));
  }
  float value() const {
    uint32_t bits = bits_;
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
    alignas(64) uint32_t lanes[Vectorized<float>::size()];
#if defined(CPU_CAPABILITY_AVX512)
    _mm512_store_si512(lanes, lanes_);
#else
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), lanes_);
#endif
    for (const uint32_t lane : lanes) {
      bits = std::max(bits, lane);
    }
#endif
    return bits > kInfBits ? std::numeric_limits<float>::quiet_NaN()
                           : c10::bit_cast<float>(bits);
  }

 private:
  static constexpr uint32_t kInfBits = 0x7f800000u;
#if defined(CPU_CAPABILITY_AVX512)
  __m512i lanes_ = _mm512_setzero_si512();
#elif defined(CPU_CAPABILITY_AVX2)
  __m256i lanes_ = _mm256_setzero_si256();
#endif
  uint32_t bits_ = 0;
};

// A block's n new values (fp32, in L1) waiting to be stored as codes: scale = absmax / 127 (IEEE
// fp32 division), code = clamp(round_half_even(x / scale), -127, 127) with a true division
// (x * (1 / scale) rounds differently): the reference encoder's operations, each rounded once.
// A block whose scale is 0 (all zeros) or not finite (a NaN or inf, which the scale alone keeps
// in the decoded values) gets zero codes at once; `active` says whether the divisions remain.
struct PendingBlock {
  const float* values = nullptr;
  int8_t* codes = nullptr;
  int64_t n = 0;
  float scale = 0.0f;
  bool active = false;

  // Sets and writes the scale from the absmax; the zero codes of a zero or non-finite scale.
  void start(float absmax, float* scale_out) {
    scale = absmax / kCodeMax;
    *scale_out = scale;
    active = scale > 0.0f && scale <= FLT_MAX;
    if (!active) {
      std::fill(codes, codes + n, int8_t(0));
    }
  }

  // Codes [i, i + Vectorized<float>::size()).
  void encode_vector(int64_t i) const {
    if (active) {
      store_codes(Vectorized<float>::loadu(values + i) / Vectorized<float>(scale), codes + i);
    }
  }

  void finish() {
    if (!active) {
      return;
    }
    int64_t i = 0;
    for (; i + Vectorized<float>::size() <= n; i += Vectorized<float>::size()) {
      encode_vector(i);
    }
    for (; i < n; ++i) {
      codes[i] = static_cast<int8_t>(
          std::min(std::max(std::nearbyint(values[i] / scale), -kCodeMax), kCodeMax));
    }
    active = false;
  }
};

// How a call keeps its momentum buffer: none, in the params' dtype, or as int8 codes with block
// scales (the buffer then encoded as d_new is, and the step goes on with the fp32 new buffer).
enum class Buffer { kNone, kParam, kInt8 };

template <Buffer kBuffer>
constexpr bool kMomentumOf = kBuffer != Buffer::kNone;

// One block's pointers: param, gradient, both history slots' codes and scales, the buffer (in
// the params' dtype, or codes and scale), and where the new values wait for their codes.
template <typename P>
struct Block {
  P* w;
  const P* g;
  const int8_t* codes1;
  float scale1;
  const int8_t* codes2;      // read here; overwritten with d_new's codes later
  float scale2;
  P* buf;                    // Buffer::kParam
  const int8_t* buf_codes;   // Buffer::kInt8: read here; overwritten later
  float buf_scale;
  int64_t n;
  float* d_new;
  float* new_buf;            // Buffer::kInt8: the fp32 new buffer
};

// The block's two absmaxes: d_new's, and the new buffer's (Buffer::kInt8).
struct BlockAbsmaxes {
  float d_new;
  float buffer;
};

// Steps the n <= 256 elements of one block. The operations are step_span's (the same
// tmsgd_update on the same vectors and tail), only the history (and an 8-bit buffer) is decoded
// in registers instead of loaded, and d_new (and the new 8-bit buffer) land in L1 for their
// codes. With kEncodePrevious (both blocks whole) the loop also encodes the previous block, so
// that its divisions overlap this block's loads and arithmetic instead of running alone.
template <typename P, Buffer kBuffer, bool kEncodePrevious>
C10_ALWAYS_INLINE BlockAbsmaxes step_block(const Block<P> k, const UpdateScalars<float> s,
                                           const PendingBlock previous_d_new,
                                           const PendingBlock previous_buffer) {
  // Everything by value: the codes' int8 stores may alias any memory the compiler cannot see is
  // private, which would reload every pointer, scale and flag after each of them.
  using Vec = Vectorized<float>;
  constexpr int64_t kLanes = Vec::size();
  constexpr int64_t kStep = 2 * kLanes;
  constexpr bool kMomentum = kMomentumOf<kBuffer>;
  const Vec zero(0.0f), s1(k.scale1), s2(k.scale2), sb(k.buf_scale);
  BlockAbsmax d_new_absmax, buffer_absmax;
  int64_t i = 0;
  for (; i + kStep <= k.n; i += kStep) {
    Vec w0, w1, g0, g1;
    Vec a0 = zero, a1 = zero, b0 = zero, b1 = zero, m0 = zero, m1 = zero;
    load2(k.w + i, w0, w1);
    load2(k.g + i, g0, g1);
    if (s.multistep) {  // the warm-up never reads the history
      a0 = load_codes(k.codes1 + i) * s1;
      a1 = load_codes(k.codes1 + i + kLanes) * s1;
      b0 = load_codes(k.codes2 + i) * s2;
      b1 = load_codes(k.codes2 + i + kLanes) * s2;
    }
    if (kMomentum && !s.first) {  // the first step assigns the buffer without reading it
      if constexpr (kBuffer == Buffer::kInt8) {
        m0 = load_codes(k.buf_codes + i) * sb;
        m1 = load_codes(k.buf_codes + i + kLanes) * sb;
      } else if constexpr (kBuffer == Buffer::kParam) {
        load2(k.buf + i, m0, m1);
      }
    }
    const Vec n0 = tmsgd_update<kMomentum>(w0, g0, a0, b0, m0, s);
    const Vec n1 = tmsgd_update<kMomentum>(w1, g1, a1, b1, m1, s);
    store2(k.w + i, w0, w1);
    if constexpr (kBuffer == Buffer::kInt8) {
      m0.store(k.new_buf + i);
      m1.store(k.new_buf + i + kLanes);
      buffer_absmax.add(m0);
      buffer_absmax.add(m1);
    } else if constexpr (kBuffer == Buffer::kParam) {
      store2(k.buf + i, m0, m1);
    }
    n0.store(k.d_new + i);
    n1.store(k.d_new + i + kLanes);
    d_new_absmax.add(n0);
    d_new_absmax.add(n1);
    if constexpr (kEncodePrevious) {
      previous_d_new.encode_vector(i);
      previous_d_new.encode_vector(i + kLanes);
      if constexpr (kBuffer == Buffer::kInt8) {
        previous_buffer.encode_vector(i);
        previous_buffer.encode_vector(i + kLanes);
      }
    }
  }
  for (; i < k.n; ++i) {  // a short block's last elements, as step_element steps them
    float wi = static_cast<float>(k.w[i]);
    float mi = 0.0f;
    if (kMomentum && !s.first) {
      if constexpr (kBuffer == Buffer::kInt8) {
        mi = static_cast<float>(k.buf_codes[i]) * k.buf_scale;
      } else if constexpr (kBuffer == Buffer::kParam) {
        mi = static_cast<float>(k.buf[i]);
      }
    }
    const float a = s.multistep ? static_cast<float>(k.codes1[i]) * k.scale1 : 0.0f;
    const float b = s.multistep ? static_cast<float>(k.codes2[i]) * k.scale2 : 0.0f;
    k.d_new[i] = tmsgd_update<kMomentum>(wi, static_cast<float>(k.g[i]), a, b, mi, s);
    k.w[i] = static_cast<P>(wi);
    if constexpr (kBuffer == Buffer::kInt8) {
      k.new_buf[i] = mi;
      buffer_absmax.add(mi);
    } else if constexpr (kBuffer == Buffer::kParam) {
      k.buf[i] = static_cast<P>(mi);
    }
    d_new_absmax.add(k.d_new[i]);
  }
  return {d_new_absmax.value(), kBuffer == Buffer::kInt8 ? buffer_absmax.value() : 0.0f};
}

// step_block with the scalars in a local copy, which the stores cannot alias. The usual call (no
// grad scale, maximize, weight decay or nesterov, past the warm-up) gets a copy whose flags are
// constants, so that the compiler drops their tests from the loop; its values are the call's, so
// the arithmetic is the same.
template <typename P, Buffer kBuffer, bool kEncodePrevious>
BlockAbsmaxes step_block_dispatch(const Block<P>& k, const UpdateScalars<float>& scalars,
                                  const PendingBlock& previous_d_new,
                                  const PendingBlock& previous_buffer) {
  UpdateScalars<float> s = scalars;
  if (!s.has_scale && !s.maximize && s.weight_decay == 0.0f && !s.nesterov && s.multistep) {
    s.has_scale = false;
    s.maximize = false;
    s.weight_decay = 0.0f;
    s.nesterov = false;
    s.multistep = true;
    return step_block<P, kBuffer, kEncodePrevious>(k, s, previous_d_new, previous_buffer);
  }
  return step_block<P, kBuffer, kEncodePrevious>(k, s, previous_d_new, previous_buffer);
}

template <typename P, Buffer kBuffer>
void step_int8_typed(const CpuCall<float>& call) {
  const int64_t* offsets = call.offsets;
  // kGrain elements per task, in whole blocks.
  at::parallel_for(0, offsets[call.count], kGrain / kInt8Block, [&](int64_t begin, int64_t end) {
    // The new values of the block being stepped and of the one before, whose codes wait for
    // its scales: d_new, and the fp32 new buffer with an 8-bit buffer.
    alignas(64) float d_new[2][kInt8Block];
    alignas(64) float new_buf[kBuffer == Buffer::kInt8 ? 2 : 1][kInt8Block];
    PendingBlock previous_d_new, previous_buffer;
    int64_t i = std::upper_bound(offsets, offsets + call.count + 1, begin) - offsets - 1;
    for (; i < call.count && offsets[i] < end; ++i) {
      const int64_t lo = std::max(begin, offsets[i]) - offsets[i];
      const int64_t hi = std::min(end, offsets[i + 1]) - offsets[i];
      if (hi <= lo) {
        continue;  // params without blocks
      }
      const CpuTensor<float>& t = call.tensors[i];
      const int64_t blocks_per_row = (t.per_row + kInt8Block - 1) / kInt8Block;
      // Block b is block `b % blocks_per_row` of row `b / blocks_per_row`; its scale is entry b
      // of the row-major (rows, blocks_per_row) scales. Rows advance without a division.
      int64_t row = lo / blocks_per_row;
      int64_t in_row = (lo - row * blocks_per_row) * kInt8Block;
      for (int64_t b = lo; b < hi; ++b) {
        const int64_t start = row * t.per_row + in_row;
        const int64_t n = std::min(kInt8Block, t.per_row - in_row);
        const int slot = static_cast<int>(b % 2);
        Block<P> k{static_cast<P*>(t.param) + start,
                   static_cast<const P*>(t.grad) + start,
                   static_cast<const int8_t*>(t.d1) + start,
                   t.d1_scales[b],
                   static_cast<const int8_t*>(t.d2) + start,
                   t.d2_scales[b],
                   nullptr,
                   nullptr,
                   0.0f,
                   n,
                   d_new[slot],
                   nullptr};
        if constexpr (kBuffer == Buffer::kParam) {
          k.buf = static_cast<P*>(t.momentum) + start;
        } else if constexpr (kBuffer == Buffer::kInt8) {
          k.buf_codes = static_cast<const int8_t*>(t.momentum) + start;
          k.buf_scale = t.momentum_scales[b];
          k.new_buf = new_buf[slot];
        }
        BlockAbsmaxes absmax;
        if (previous_d_new.n == kInt8Block && n == kInt8Block) {
          absmax = step_block_dispatch<P, kBuffer, true>(k, t.scalars, previous_d_new,
                                                         previous_buffer);
        } else {
          previous_d_new.finish();
          previous_buffer.finish();
          absmax = step_block_dispatch<P, kBuffer, false>(k, t.scalars, previous_d_new,
                                                          previous_buffer);
        }
        // This block's codes are read; their scales and codes may now change.
        previous_d_new = {k.d_new, static_cast<int8_t*>(t.d2) + start, n};
        previous_d_new.start(absmax.d_new, &t.d2_scales[b]);
        if constexpr (kBuffer == Buffer::kInt8) {
          previous_buffer = {k.new_buf, static_cast<int8_t*>(t.momentum) + start, n};
          previous_buffer.start(absmax.buffer, &t.momentum_scales[b]);
        }
        in_row += kInt8Block;
        if (in_row >= t.per_row) {
          in_row = 0;
          ++row;
        }
      }
    }
    previous_d_new.finish();
    previous_buffer.finish();
  });
}

void step_int8(const CpuCall<float>& call) {
  with_type(call.param_dtype, [&](auto p_tag) {
    using P = decltype(p_tag);
    if constexpr (std::is_same_v<P, double>) {
      TORCH_CHECK(false, "tmsgd_step: internal error, fp64 params with an 8-bit history");
    } else if (call.int8_momentum) {
      step_int8_typed<P, Buffer::kInt8>(call);
    } else if (call.momentum) {
      step_int8_typed<P, Buffer::kParam>(call);
    } else {
      step_int8_typed<P, Buffer::kNone>(call);
    }
  });
}

}  // namespace tmsgd::cpu::CPU_CAPABILITY
