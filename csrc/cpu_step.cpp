// The CPU implementation of tmsgd_kernels::tmsgd_step: reads the step count and the scalars,
// describes the bucket with raw pointers, and runs the kernel compiled for the best instruction
// set this CPU has (chosen once, at the first step).
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "cpu_kernel.h"
#include "op_checks.h"

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

template <typename T>
void run(const CpuBucket& bucket, const StepScalars<T>& s) {
  if (!has_vector_path(bucket.param_dtype, bucket.history_dtype)) {
    DEFAULT::step_scalar(bucket, s);
    return;
  }
  switch (capability()) {
#if defined(TMSGD_CPU_AVX512)
    case Capability::kAvx512: return AVX512::step_vectorized(bucket, s);
#endif
#if defined(TMSGD_CPU_AVX2)
    case Capability::kAvx2: return AVX2::step_vectorized(bucket, s);
#endif
    default: return DEFAULT::step_vectorized(bucket, s);
  }
}

template <typename T>
StepScalars<T> read_scalars(int64_t step, double lr, const std::optional<at::Tensor>& lr_tensor,
                            double b1, double b2, double momentum, double dampening,
                            double weight_decay, bool nesterov, bool maximize, int64_t switch_step,
                            const std::optional<at::Tensor>& grad_scale) {
  // Converted to T the way the pure-PyTorch backend converts them (tensor.to(opmath)).
  const T lr_value = lr_tensor.has_value() ? lr_tensor->item().to<T>() : static_cast<T>(lr);
  const T scale = grad_scale.has_value() ? grad_scale->item().to<T>() : T(1);
  return make_step_scalars<T>(step, lr_value, static_cast<T>(b1), static_cast<T>(b2),
                              static_cast<T>(momentum), static_cast<T>(dampening),
                              static_cast<T>(weight_decay), nesterov, maximize, switch_step,
                              grad_scale.has_value(), scale);
}

void tmsgd_step_cpu(at::TensorList params, at::TensorList grads, const at::Tensor& history,
                    const std::optional<at::Tensor>& momentum_buffer, const at::Tensor& step,
                    double lr, const std::optional<at::Tensor>& lr_tensor, double b1, double b2,
                    double momentum, double dampening, double weight_decay, bool nesterov,
                    bool maximize, int64_t switch_step, const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf) {
  const std::vector<int64_t> offsets = check_and_offsets(
      params, grads, history, momentum_buffer, step, lr_tensor, momentum, grad_scale, found_inf);
  if (params.empty()) {
    return;  // as the pure-PyTorch backend: an empty bucket is not a step
  }
  if (found_inf.has_value() && found_inf->item<double>() != 0) {
    return;  // AMP found an inf/nan: the step changes nothing, not even the count
  }
  int64_t* count = step.data_ptr<int64_t>();
  const int64_t steps = *count;
  {
    const int parity = static_cast<int>(steps % 2);
    char* rows = static_cast<char*>(history.data_ptr());
    const int64_t row_bytes = history.stride(0) * history.element_size();
    std::vector<void*> param_ptrs(params.size());
    std::vector<const void*> grad_ptrs(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      param_ptrs[i] = params[i].data_ptr();
      grad_ptrs[i] = grads[i].data_ptr();
    }
    CpuBucket bucket;
    bucket.count = static_cast<int64_t>(params.size());
    bucket.offsets = offsets.data();
    bucket.params = param_ptrs.data();
    bucket.grads = grad_ptrs.data();
    bucket.history_d2 = rows + parity * row_bytes;
    bucket.history_d1 = rows + (1 - parity) * row_bytes;
    bucket.momentum = momentum_buffer.has_value() ? momentum_buffer->data_ptr() : nullptr;
    bucket.param_dtype = params[0].scalar_type();
    bucket.history_dtype = history.scalar_type();
    if (bucket.param_dtype == at::kDouble) {
      run(bucket, read_scalars<double>(steps, lr, lr_tensor, b1, b2, momentum, dampening,
                                       weight_decay, nesterov, maximize, switch_step, grad_scale));
    } else {
      run(bucket, read_scalars<float>(steps, lr, lr_tensor, b1, b2, momentum, dampening,
                                      weight_decay, nesterov, maximize, switch_step, grad_scale));
    }
  }
  *count = steps + 1;
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

TORCH_LIBRARY_IMPL(tmsgd_kernels, CPU, m) {
  m.impl("tmsgd_step", &tmsgd::cpu::tmsgd_step_cpu);
}
