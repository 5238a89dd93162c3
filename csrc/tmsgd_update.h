// The TM-SGD per-element update (delta form, DESIGN.md section 1), written once for every kernel.
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

// Everything one step needs besides the tensors. Built once per step from the step count and the
// hyperparameters (on the host for the CPU kernel, by every CUDA thread from device memory).
template <typename T>
struct StepScalars {
  T lr;
  T b1;            // coefficient of d1 (the newest step); 0 during warm-up
  T b2;            // coefficient of d2; 0 during warm-up
  bool multistep;  // false during the switch_step warm-up: d_new = -lr * u, history not read
  bool has_scale;
  T grad_scale;
  bool maximize;
  T weight_decay;
  T momentum;
  T retain;  // momentum-buffer coefficients this step: (0, 1) on the first step, else
  T gain;    // (momentum, 1 - dampening), as torch.optim.SGD initializes buf = g
  bool nesterov;
  int parity;  // history slot holding d2 (read, then overwritten with d_new); 1 - parity holds d1
};

template <typename T>
C10_HOST_DEVICE inline StepScalars<T> make_step_scalars(
    int64_t step, T lr, T b1, T b2, T momentum, T dampening, T weight_decay, bool nesterov,
    bool maximize, int64_t switch_step, bool has_scale, T grad_scale) {
  StepScalars<T> s;
  s.lr = lr;
  s.multistep = step >= switch_step;
  s.b1 = s.multistep ? b1 : T(0);
  s.b2 = s.multistep ? b2 : T(0);
  s.has_scale = has_scale;
  s.grad_scale = grad_scale;
  s.maximize = maximize;
  s.weight_decay = weight_decay;
  s.momentum = momentum;
  s.retain = step == 0 ? T(0) : momentum;
  s.gain = step == 0 ? T(1) : T(1) - dampening;
  s.nesterov = nesterov;
  s.parity = static_cast<int>(step % 2);
  return s;
}

// One element (or one vector of elements): reads the param w, its gradient g, the two history
// entries d1 (newest) and d2, and the momentum buffer (when kMomentum); updates w and buf in place
// and returns d_new, which the caller stores over d2. The operation order follows the pure-PyTorch
// backend (scale, negate, decay, momentum, d1*b1 + d2*b2 - u*lr) so the two agree to rounding.
template <bool kMomentum, typename V, typename T>
C10_HOST_DEVICE inline V tmsgd_update(V& w, V g, V d1, V d2, V& buf, const StepScalars<T>& s) {
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
    buf = buf * V(s.retain) + g * V(s.gain);
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
// d2). The CPU kernel's scalar tail and the CUDA kernel's scalar path both run this.
template <bool kMomentum, typename P, typename H, typename T>
C10_HOST_DEVICE inline void step_element(P* w, const P* g, H* d2, const H* d1, P* buf, int64_t i,
                                         const StepScalars<T>& s) {
  T wi = static_cast<T>(w[i]);
  T mi = kMomentum ? static_cast<T>(buf[i]) : T(0);
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
