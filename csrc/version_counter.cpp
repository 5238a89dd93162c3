// The version-counter rule of both TM-SGD ops (tmsgd_step, tmsgd_step_triton), as an
// ADInplaceOrView kernel: bump the version of every tensor the schema marks as written (params,
// delta_even, delta_odd, momentum_buffers, steps), as PyTorch's own in-place ops do, so autograd
// still notices a param stepped after it was saved for backward; then pass the call on to the
// device kernel.
//
// In C++ and unboxed because it runs every step. Measured on the project's 2-core CPU machine
// for 161 tensors: the same rule as a Python kernel (tmsgd_kernels/ops.py keeps it for builds
// without this extension) cost about 0.2 ms per step, and a boxed C++ kernel that read the
// schema about 40 us, most of it converting the six lists to and from the boxed form once more.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

namespace tmsgd {
namespace {

using StepSignature = void(at::TensorList, at::TensorList, at::TensorList, at::TensorList,
                           at::TensorList, at::TensorList, double, const std::optional<at::Tensor>&,
                           double, double, double, double, double, bool, bool, int64_t,
                           const std::optional<at::Tensor>&, const std::optional<at::Tensor>&);

void bump(at::TensorList tensors) {
  for (const at::Tensor& tensor : tensors) {
    torch::autograd::impl::bump_version(tensor);
  }
}

// kName: the op's name in the tmsgd_kernels namespace.
template <const char* kName>
void bump_then_redispatch(c10::DispatchKeySet keys, at::TensorList params, at::TensorList grads,
                          at::TensorList delta_even, at::TensorList delta_odd,
                          at::TensorList momentum_buffers, at::TensorList steps, double lr,
                          const std::optional<at::Tensor>& lr_tensor, double b1, double b2,
                          double momentum, double dampening, double weight_decay, bool nesterov,
                          bool maximize, int64_t switch_step,
                          const std::optional<at::Tensor>& grad_scale,
                          const std::optional<at::Tensor>& found_inf) {
  // Everything the schema marks (x!): grads and the scalars are only read.
  bump(params);
  bump(delta_even);
  bump(delta_odd);
  bump(momentum_buffers);
  bump(steps);
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow(kName, "")
                             .typed<StepSignature>();
  op.redispatch(keys & c10::after_ADInplaceOrView_keyset, params, grads, delta_even, delta_odd,
                momentum_buffers, steps, lr, lr_tensor, b1, b2, momentum, dampening, weight_decay,
                nesterov, maximize, switch_step, grad_scale, found_inf);
}

// The Autograd kernel: the step is not differentiable. Registered so the call does not take
// PyTorch's boxed autograd fallback, which walks every argument and cost about 40 us per step for
// 161 tensors (measured as above); it refuses, as in-place torch ops do, to step a param that
// requires grad while grad mode is on, then goes on to the version-counter kernel.
template <const char* kName>
void refuse_grad_then_redispatch(c10::DispatchKeySet keys, at::TensorList params,
                                 at::TensorList grads, at::TensorList delta_even,
                                 at::TensorList delta_odd, at::TensorList momentum_buffers,
                                 at::TensorList steps, double lr,
                                 const std::optional<at::Tensor>& lr_tensor, double b1, double b2,
                                 double momentum, double dampening, double weight_decay,
                                 bool nesterov, bool maximize, int64_t switch_step,
                                 const std::optional<at::Tensor>& grad_scale,
                                 const std::optional<at::Tensor>& found_inf) {
  if (at::GradMode::is_enabled()) {
    for (const at::Tensor& param : params) {
      TORCH_CHECK(!param.requires_grad(), kName, ": a param that requires grad cannot be "
                  "stepped in place while grad mode is on; call it under torch.no_grad()");
    }
  }
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow(kName, "")
                             .typed<StepSignature>();
  op.redispatch(keys & c10::after_autograd_keyset, params, grads, delta_even, delta_odd,
                momentum_buffers, steps, lr, lr_tensor, b1, b2, momentum, dampening, weight_decay,
                nesterov, maximize, switch_step, grad_scale, found_inf);
}

constexpr char kNative[] = "tmsgd_kernels::tmsgd_step";
constexpr char kTriton[] = "tmsgd_kernels::tmsgd_step_triton";

}  // namespace
}  // namespace tmsgd

TORCH_LIBRARY_IMPL(tmsgd_kernels, ADInplaceOrView, m) {
  m.impl("tmsgd_step", TORCH_FN(tmsgd::bump_then_redispatch<tmsgd::kNative>));
  m.impl("tmsgd_step_triton", TORCH_FN(tmsgd::bump_then_redispatch<tmsgd::kTriton>));
}

TORCH_LIBRARY_IMPL(tmsgd_kernels, Autograd, m) {
  m.impl("tmsgd_step", TORCH_FN(tmsgd::refuse_grad_then_redispatch<tmsgd::kNative>));
  m.impl("tmsgd_step_triton", TORCH_FN(tmsgd::refuse_grad_then_redispatch<tmsgd::kTriton>));
}
