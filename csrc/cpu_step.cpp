// The CPU implementation of tmsgd_kernels::tmsgd_step: checks the call, describes every tensor
// with raw pointers and the scalars of its own count, runs the kernel compiled for the best
// instruction set this CPU has (chosen once, at the first step), then advances every count.
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>

#include <string>
#include <type_traits>
#include <vector>

#include "cpu_kernel.h"
#include "op_checks.h"
#include "step_signature.h"

namespace tmsgd::cpu {

namespace {

enum class Capability { kDefault, kAvx2, kAvx512 };

// ATen's choice (which honours ATEN_CPU_CAPABILITY=default/avx2, used by the tests to run every
// copy on one machine), capped by what this build compiled and by the CPU's own flags: a copy
// built with -mavx512* must never run on a CPU without those instructions.
Capability detect_capability() {
  const std::string aten = at::get_cpu_capability();
#if defined(TMSGD_CPU_AVX512)
  if (aten == "AVX512" && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma")) {
    return Capability::kAvx512;
  }
#endif
#if defined(TMSGD_CPU_AVX2)
  if ((aten == "AVX512" || aten == "AVX2") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
    return Capability::kAvx2;
  }
#endif
  return Capability::kDefault;
}

Capability capability() {
  static const Capability chosen = detect_capability();
  return chosen;
}

// An 8-bit history (fp32 opmath only): the copy for this CPU of the block kernel.
void run_int8(const CpuCall<float>& call) {
  switch (capability()) {
#if defined(TMSGD_CPU_AVX512)
    case Capability::kAvx512: return AVX512::step_int8(call);
#endif
#if defined(TMSGD_CPU_AVX2)
    case Capability::kAvx2: return AVX2::step_int8(call);
#endif
    default: return DEFAULT::step_int8(call);
  }
}

template <typename T>
void run(const CpuCall<T>& call) {
  if constexpr (std::is_same_v<T, float>) {
    if (call.int8_history) {
      return run_int8(call);
    }
  }
  if (!has_vector_path(call.param_dtype, call.history_dtype)) {
    DEFAULT::step_scalar(call);
    return;
  }
  switch (capability()) {
#if defined(TMSGD_CPU_AVX512)
    case Capability::kAvx512: return AVX512::step_vectorized(call);
#endif
#if defined(TMSGD_CPU_AVX2)
    case Capability::kAvx2: return AVX2::step_vectorized(call);
#endif
    default: return DEFAULT::step_vectorized(call);
  }
}

// Describes the call for opmath T and runs it. Counts are read here, before any write.
template <typename T>
void step_with_opmath(const StepArguments& a, const std::vector<at::Tensor>& grads) {
  const StepScalars& s = a.scalars;
  // Converted to T as the pure-PyTorch step converts them (tensor.to(opmath)).
  const T lr = s.lr_tensor.has_value() ? s.lr_tensor->item().to<T>() : static_cast<T>(s.lr);
  const T scale = a.grad_scale.has_value() ? a.grad_scale->item().to<T>() : T(1);
  const UpdateScalars<T> shared = update_scalars<T>(s, lr, a.grad_scale.has_value(), scale);

  const size_t n = a.params.size();
  const bool int8_history = !a.delta_even_scales.empty();
  std::vector<CpuTensor<T>> tensors(n);
  std::vector<int64_t> offsets(n + 1, 0);
  for (size_t i = 0; i < n; ++i) {
    const int64_t count = *a.steps[i].data_ptr<int64_t>();
    TORCH_CHECK(count >= 0, "tmsgd_step: steps[", i, "] is negative (", count, ")");
    CpuTensor<T>& t = tensors[i];
    t.scalars = shared;
    set_count(t.scalars, count, s.switch_step);
    const bool even = t.scalars.parity == 0;
    t.param = a.params[i].data_ptr();
    t.grad = grads[i].data_ptr();
    t.d2 = (even ? a.delta_even[i] : a.delta_odd[i]).data_ptr();
    t.d1 = (even ? a.delta_odd[i] : a.delta_even[i]).data_ptr();
    t.momentum = a.momentum_buffers.empty() ? nullptr : a.momentum_buffers[i].data_ptr();
    if (!int8_history) {
      offsets[i + 1] = offsets[i] + a.params[i].numel();
      continue;
    }
    // Work is counted in blocks: rows times blocks per row (the op checks gave the scales that
    // shape and the rows their place in memory).
    const detail::Int8Rows rows = detail::int8_rows(a.params[i]);
    t.per_row = rows.per_row;
    t.d2_scales = (even ? a.delta_even_scales[i] : a.delta_odd_scales[i]).data_ptr<float>();
    t.d1_scales = (even ? a.delta_odd_scales[i] : a.delta_even_scales[i]).data_ptr<float>();
    if (!a.momentum_scales.empty()) {
      t.momentum_scales = a.momentum_scales[i].data_ptr<float>();
    }
    offsets[i + 1] = offsets[i] + rows.rows * rows.blocks_per_row();
  }
  CpuCall<T> call;
  call.count = static_cast<int64_t>(n);
  call.offsets = offsets.data();
  call.tensors = tensors.data();
  call.momentum = !a.momentum_buffers.empty();
  call.param_dtype = a.params[0].scalar_type();
  call.history_dtype = a.delta_even[0].scalar_type();
  call.int8_history = int8_history;
  call.int8_momentum = !a.momentum_scales.empty();
  run(call);
}

void step_cpu(const StepArguments& a) {
  const CheckedCall checked = check_step_arguments(a);
  if (a.params.empty()) {
    return;
  }
  if (a.found_inf.has_value() && a.found_inf->item<double>() != 0) {
    return;  // AMP found an inf/nan: the step changes nothing, not even the counts
  }
  if (a.params[0].scalar_type() == at::kDouble) {
    step_with_opmath<double>(a, checked.grads);
  } else {
    step_with_opmath<float>(a, checked.grads);
  }
  for (const auto& count : a.steps) {
    *count.data_ptr<int64_t>() += 1;
  }
}

}  // namespace

std::string capability_name() {
  switch (capability()) {
    case Capability::kAvx512: return "AVX512";
    case Capability::kAvx2: return "AVX2";
    default: return "DEFAULT";
  }
}

}  // namespace tmsgd::cpu

TMSGD_REGISTER_STEP(CPU, tmsgd::cpu::step_cpu)
