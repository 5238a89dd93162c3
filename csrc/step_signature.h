// The op's signature, written once for C++. Its schema is generated in Python
// (tmsgd_kernels/step_contract.py); the dispatcher refuses, when the schema is defined, a kernel
// whose C++ types differ from it, and tests/test_native_cuda_source.py checks that the names and
// their order below are the schema's.
//
// Every registered kernel of the op is declared from this list: the CPU and CUDA entry points
// are step_entry<implementation>, registered by TMSGD_REGISTER_STEP (below), the version-counter
// and autograd kernels (version_counter.cpp) are one template instantiated with StepSignature's
// parameter types, and each registration static_asserts that what it registers has this
// signature.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <type_traits>

// The op's parameters, types and names, in the schema's order.
#define TMSGD_STEP_PARAMETERS                                                                  \
  at::TensorList params, at::TensorList grads, at::TensorList delta_even,                       \
      at::TensorList delta_odd, at::TensorList delta_even_scales,                               \
      at::TensorList delta_odd_scales, at::TensorList momentum_buffers,                         \
      at::TensorList momentum_scales, at::TensorList steps, double lr,                          \
      const std::optional<at::Tensor>& lr_tensor, double b1, double b2, double momentum,        \
      double dampening, double weight_decay, bool nesterov, bool maximize, int64_t switch_step, \
      const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf

namespace tmsgd {

using StepSignature = void(TMSGD_STEP_PARAMETERS);

// The op's scalars as it receives them: Python's StepScalars, field for field. The kernels read
// them converted to their opmath type (UpdateScalars<T>, tmsgd_update.h).
struct StepScalars {
  double lr;
  const std::optional<at::Tensor>& lr_tensor;  // when given, the learning rate instead of lr
  double b1;
  double b2;
  double momentum;
  double dampening;
  double weight_decay;
  bool nesterov;
  bool maximize;
  int64_t switch_step;
};

// All of one call's arguments: what the CPU and CUDA implementations take.
struct StepArguments {
  at::TensorList params;
  at::TensorList grads;
  at::TensorList delta_even;
  at::TensorList delta_odd;
  // Empty for a float history; with int8 codes in delta_even / delta_odd, their fp32 block
  // scales, one tensor per param (tmsgd_kernels/int8_history.py).
  at::TensorList delta_even_scales;
  at::TensorList delta_odd_scales;
  at::TensorList momentum_buffers;
  // Empty for a float momentum buffer; with int8 codes in momentum_buffers (only with an 8-bit
  // history), their fp32 block scales, shaped as the history's.
  at::TensorList momentum_scales;
  at::TensorList steps;
  StepScalars scalars;
  const std::optional<at::Tensor>& grad_scale;
  const std::optional<at::Tensor>& found_inf;
};

using StepImplementation = void (*)(const StepArguments&);

// The function registered for an implementation: the op's parameters, gathered.
template <StepImplementation kImplementation>
void step_entry(TMSGD_STEP_PARAMETERS) {
  kImplementation({params, grads, delta_even, delta_odd, delta_even_scales, delta_odd_scales,
                   momentum_buffers, momentum_scales, steps,
                   {lr, lr_tensor, b1, b2, momentum, dampening, weight_decay, nesterov,
                    maximize, switch_step},
                   grad_scale, found_inf});
}

}  // namespace tmsgd

// Registers implementation IMPLEMENTATION (a StepImplementation) as tmsgd_kernels::tmsgd_step's
// kernel for dispatch key KEY, through step_entry, whose type is checked here at compile time.
#define TMSGD_REGISTER_STEP(KEY, IMPLEMENTATION)                                                 \
  static_assert(std::is_same_v<decltype(::tmsgd::step_entry<IMPLEMENTATION>),                   \
                               ::tmsgd::StepSignature>,                                          \
                "the " #KEY " entry point must have the op's signature (step_signature.h)");     \
  TORCH_LIBRARY_IMPL(tmsgd_kernels, KEY, m) {                                                    \
    m.impl("tmsgd_step", TORCH_FN(::tmsgd::step_entry<IMPLEMENTATION>));                        \
  }
