// The TM-SGD per-element update (delta form, docs/DESIGN.md section 1), written once for every
// kernel.
//
// `V` is the value type the update runs on and `T` its scalar (opmath) type: float for
// fp32/fp16/bf16 params, double for fp64. The CUDA kernel calls it with V = T (one element per
// call); the CPU kernel calls it with V = at::vec::Vectorized<T> (a whole SIMD register) and with
// V = T for the tail, so the CPU tests exercise the arithmetic the GPU runs. Only +, -, *, / and
// the broadcast constructor V(T) are used, which both types provide.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace tmsgd {

// What the update of one tensor reads besides its memory: the op's StepScalars
// (step_signature.h) converted to the opmath type T, with 1 - dampening as `gain`, the grad scale,
// and three fields from the tensor's own count, which may differ between the tensors of one call
// (a param that had no grad for a while keeps its count), set per tensor by `set_count`.
template <typename T>
struct UpdateScalars {
  T lr;
  T b1;  // coefficient of d1 (the newest step)
  T b2;  // coefficient of d2
  T grad_scale;
  T weight_decay;
  T momentum;
  T gain;  // 1 - dampening
  bool has_scale;
  bool maximize;
  bool nesterov;
  bool multistep;  // false during the switch_step warm-up: d_new = -lr * u, history not read
  bool first;      // the tensor's first step: the momentum buffer becomes g, and is not read
  int parity;      // history slot holding d2 (read, then overwritten with d_new); 1 - parity: d1
};

// The call's part of UpdateScalars from StepScalars, converted to T the way the pure-PyTorch
// step converts its scalars (1 - dampening is formed in double, then rounded once). lr and
// grad_scale arrive separately because they may come from tensors. A template over the scalars'
// type because StepScalars holds a tensor, and this header stays free of torch's for nvcc.
template <typename T, typename Scalars>
inline UpdateScalars<T> update_scalars(const Scalars& s, T lr, bool has_scale, T grad_scale) {
  UpdateScalars<T> u;
  u.lr = lr;
  u.b1 = static_cast<T>(s.b1);
  u.b2 = static_cast<T>(s.b2);
  u.has_scale = has_scale;
  u.grad_scale = grad_scale;
  u.maximize = s.maximize;
  u.weight_decay = static_cast<T>(s.weight_decay);
  u.momentum = static_cast<T>(s.momentum);
  u.gain = static_cast<T>(1.0 - s.dampening);
  u.nesterov = s.nesterov;
  u.multistep = true;
  u.first = false;
  u.parity = 0;
  return u;
}

template <typename T>
C10_HOST_DEVICE inline void set_count(UpdateScalars<T>& s, int64_t count, int64_t switch_step) {
  s.multistep = count >= switch_step;
  s.first = count == 0;
  s.parity = static_cast<int>(count % 2);
}

// One element (or one vector of elements): reads the param w, its gradient g, the two history
// entries d1 (newest) and d2, and the momentum buffer (when kMomentum); updates w and buf in place
// and returns d_new, which the caller stores over d2. The operation order follows the pure-PyTorch
// backend (scale, negate, decay, momentum, d1*b1 + d2*b2 - u*lr) so the two agree to rounding.
// On the first step buf is assigned g without reading the old value: torch.optim.SGD clones g
// there, and a buffer left uninitialized (even NaN) must not leak into the step.
template <bool kMomentum, typename V, typename T>
C10_HOST_DEVICE inline V tmsgd_update(V& w, V g, V d1, V d2, V& buf, const UpdateScalars<T>& s) {
  if (s.has_scale) {
    g = g / V(s.grad_scale);
  }
  if (s.maximize) {
    g = V(T(0)) - g;
  }
  if (s.weight_decay != T(0)) {
    g = g + V(s.weight_decay) * w;
  }
  V u = g;
  if constexpr (kMomentum) {
    buf = s.first ? g : buf * V(s.momentum) + g * V(s.gain);
    u = s.nesterov ? g + buf * V(s.momentum) : buf;
  }
  V d_new;
  if (s.multistep) {
    d_new = d1 * V(s.b1) + d2 * V(s.b2) - u * V(s.lr);
  } else {
    d_new = V(T(0)) - u * V(s.lr);
  }
  w = w + d_new;
  return d_new;
}

// One element through memory: widen what is stored to T, update, narrow and store (d_new over
// d2). Reads the history only past the warm-up and the buffer only after the first step. The CPU
// kernel's scalar tail and the CUDA kernel's scalar path both run this.
template <bool kMomentum, typename P, typename H, typename T>
C10_HOST_DEVICE inline void step_element(P* w, const P* g, H* d2, const H* d1, P* buf, int64_t i,
                                         const UpdateScalars<T>& s) {
  T wi = static_cast<T>(w[i]);
  T mi = kMomentum && !s.first ? static_cast<T>(buf[i]) : T(0);
  const T a = s.multistep ? static_cast<T>(d1[i]) : T(0);
  const T b = s.multistep ? static_cast<T>(d2[i]) : T(0);
  const T d_new = tmsgd_update<kMomentum>(wi, static_cast<T>(g[i]), a, b, mi, s);
  w[i] = static_cast<P>(wi);
  d2[i] = static_cast<H>(d_new);
  if constexpr (kMomentum) {
    buf[i] = static_cast<P>(mi);
  }
}

}  // namespace tmsgd
