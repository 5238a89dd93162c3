// The version-counter rule of both TM-SGD ops (tmsgd_step, tmsgd_step_triton), as an
// ADInplaceOrView kernel: bump the version of every tensor the schema marks as written (params,
// delta_even, delta_odd, momentum_buffers, steps), as PyTorch's own in-place ops do, so autograd
// still notices a param stepped after it was saved for backward; then pass the call on to the
// device kernel. And an Autograd kernel, so the call does not take PyTorch's boxed autograd
// fallback.
//
// In C++ and unboxed because it runs every step. Measured on the project's 2-core CPU machine
// for 161 tensors: the same rule as a Python kernel (tmsgd_kernels/ops.py keeps it for builds
// without this extension) cost about 0.2 ms per step, and a boxed C++ kernel that read the
// schema about 40 us, most of it converting the six lists to and from the boxed form once more.
//
// One template serves both ops: it is instantiated with the parameter types of StepSignature
// (step_signature.h), and which arguments are written it reads from the op's schema once.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <string>
#include <type_traits>
#include <vector>

#include "step_signature.h"

namespace tmsgd {
namespace {

// One op as these kernels redispatch it, with what its schema says about each argument.
struct StepOp {
  c10::TypedOperatorHandle<StepSignature> handle;
  std::vector<bool> written;       // per argument: marked (x!) in the schema
  std::vector<std::string> names;  // per argument, for error messages

  explicit StepOp(const char* name)
      : handle(c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<StepSignature>()) {
    for (const auto& argument : handle.schema().arguments()) {
      written.push_back(argument.alias_info() != nullptr && argument.alias_info()->isWrite());
      names.push_back(argument.name());
      TORCH_CHECK(!written.back() || argument.type()->kind() == c10::TypeKind::ListType, name,
                  ": the schema marks ", argument.name(), " written; only tensor lists may be");
    }
  }
};

void bump(bool written, at::TensorList tensors) {
  if (written) {
    for (const at::Tensor& tensor : tensors) {
      torch::autograd::impl::bump_version(tensor);
    }
  }
}

// In-place torch ops refuse to write a tensor that requires grad while grad mode is on; the step
// is not differentiable, so it refuses any such tensor it would write.
void refuse_grad(const StepOp& op, size_t i, at::TensorList tensors) {
  if (!op.written[i]) {
    return;
  }
  for (size_t j = 0; j < tensors.size(); ++j) {
    TORCH_CHECK(!tensors[j].requires_grad(), op.handle.schema().name(), ": ", op.names[i], "[",
                j, "] requires grad; a tensor that requires grad cannot be stepped in place "
                "while grad mode is on: call the step under torch.no_grad()");
  }
}

// The other arguments are never written (StepOp checks the schema).
template <typename Other>
void bump(bool, const Other&) {}
template <typename Other>
void refuse_grad(const StepOp&, size_t, const Other&) {}

template <typename Signature>
struct StepKernels;

template <typename... Args>
struct StepKernels<void(Args...)> {
  // kName: the op's qualified name.
  template <const char* kName>
  static const StepOp& op() {
    static const StepOp found(kName);
    return found;
  }

  template <const char* kName>
  static void bump_then_redispatch(c10::DispatchKeySet keys, Args... args) {
    const StepOp& step = op<kName>();
    size_t i = 0;
    (bump(step.written[i++], args), ...);
    step.handle.redispatch(keys & c10::after_ADInplaceOrView_keyset, args...);
  }

  template <const char* kName>
  static void refuse_grad_then_redispatch(c10::DispatchKeySet keys, Args... args) {
    const StepOp& step = op<kName>();
    if (at::GradMode::is_enabled()) {
      size_t i = 0;
      (refuse_grad(step, i++, args), ...);
    }
    step.handle.redispatch(keys & c10::after_autograd_keyset, args...);
  }
};

using Kernels = StepKernels<StepSignature>;

constexpr char kNative[] = "tmsgd_kernels::tmsgd_step";
constexpr char kTriton[] = "tmsgd_kernels::tmsgd_step_triton";

// A kernel that takes the dispatch key set has the op's signature after it.
template <typename Kernel>
constexpr bool kStepKernel =
    std::is_same_v<Kernel, void(c10::DispatchKeySet, TMSGD_STEP_PARAMETERS)>;

static_assert(kStepKernel<decltype(Kernels::bump_then_redispatch<kNative>)> &&
                  kStepKernel<decltype(Kernels::bump_then_redispatch<kTriton>)> &&
                  kStepKernel<decltype(Kernels::refuse_grad_then_redispatch<kNative>)> &&
                  kStepKernel<decltype(Kernels::refuse_grad_then_redispatch<kTriton>)>,
              "the version-counter and autograd kernels must have the op's signature");

}  // namespace
}  // namespace tmsgd

TORCH_LIBRARY_IMPL(tmsgd_kernels, ADInplaceOrView, m) {
  m.impl("tmsgd_step", TORCH_FN(tmsgd::Kernels::bump_then_redispatch<tmsgd::kNative>));
  m.impl("tmsgd_step_triton", TORCH_FN(tmsgd::Kernels::bump_then_redispatch<tmsgd::kTriton>));
}

TORCH_LIBRARY_IMPL(tmsgd_kernels, Autograd, m) {
  m.impl("tmsgd_step", TORCH_FN(tmsgd::Kernels::refuse_grad_then_redispatch<tmsgd::kNative>));
  m.impl("tmsgd_step_triton",
         TORCH_FN(tmsgd::Kernels::refuse_grad_then_redispatch<tmsgd::kTriton>));
}
