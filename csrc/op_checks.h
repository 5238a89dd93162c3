// Input checks shared by the CPU and CUDA implementations (the optimizer validates before it
// calls; these guard direct calls of the op), and the bucket's element offsets.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/irange.h>

#include <optional>
#include <vector>

namespace tmsgd {

// Checks the op's arguments and returns the prefix sums of the params' numel (size count + 1).
inline std::vector<int64_t> check_and_offsets(
    at::TensorList params, at::TensorList grads, const at::Tensor& history,
    const std::optional<at::Tensor>& momentum_buffer, const at::Tensor& step,
    const std::optional<at::Tensor>& lr_tensor, double momentum,
    const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  TORCH_CHECK(params.size() == grads.size(), "tmsgd_step: ", params.size(), " params but ",
              grads.size(), " grads");
  std::vector<int64_t> offsets(params.size() + 1, 0);
  const auto device = history.device();
  const auto dtype = params.empty() ? history.scalar_type() : params[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              "tmsgd_step: params must be fp64, fp32, fp16 or bf16, got ", dtype);
  for (const auto i : c10::irange(params.size())) {
    const auto& p = params[i];
    const auto& g = grads[i];
    TORCH_CHECK(p.device() == device && g.device() == device, "tmsgd_step: param ", i,
                " and its grad must be on the history's device ", device);
    TORCH_CHECK(p.scalar_type() == dtype && g.scalar_type() == dtype, "tmsgd_step: param ", i,
                " and its grad must have the bucket's dtype ", dtype);
    TORCH_CHECK(p.sizes() == g.sizes(), "tmsgd_step: grad ", i, " has shape ", g.sizes(),
                ", its param ", p.sizes());
    TORCH_CHECK(p.is_contiguous() && g.is_contiguous(), "tmsgd_step: param ", i,
                " and its grad must be contiguous");
    offsets[i + 1] = offsets[i] + p.numel();
  }
  const int64_t total = offsets.back();
  TORCH_CHECK(history.dim() == 2 && history.size(0) == 2 && history.size(1) >= total,
              "tmsgd_step: history must have shape [2, >= ", total, "], got ", history.sizes());
  TORCH_CHECK(history.stride(1) == 1 || history.size(1) <= 1,
              "tmsgd_step: history rows must be contiguous");
  const auto hdtype = history.scalar_type();
  TORCH_CHECK(hdtype == at::kFloat || hdtype == at::kDouble || hdtype == at::kHalf ||
                  hdtype == at::kBFloat16,
              "tmsgd_step: history must be fp64, fp32, fp16 or bf16, got ", hdtype);
  TORCH_CHECK((momentum != 0) == momentum_buffer.has_value(),
              "tmsgd_step: momentum_buffer must be given exactly when momentum != 0");
  if (momentum_buffer.has_value()) {
    const auto& buf = *momentum_buffer;
    TORCH_CHECK(buf.device() == device && buf.scalar_type() == dtype && buf.is_contiguous() &&
                    buf.numel() >= total,
                "tmsgd_step: momentum_buffer must be a contiguous ", dtype, " tensor of >= ",
                total, " elements on ", device);
  }
  TORCH_CHECK(step.device() == device && step.scalar_type() == at::kLong && step.numel() == 1,
              "tmsgd_step: step must be a one-element int64 tensor on ", device);
  for (const auto* scalar : {&lr_tensor, &grad_scale, &found_inf}) {
    if (scalar->has_value()) {
      TORCH_CHECK((*scalar)->device() == device && (*scalar)->numel() == 1 &&
                      at::isFloatingType((*scalar)->scalar_type()),
                  "tmsgd_step: lr_tensor, grad_scale and found_inf must be one-element "
                  "floating-point tensors on ", device);
    }
  }
  return offsets;
}

}  // namespace tmsgd
