// Argument checks shared by the CPU and CUDA implementations of tmsgd_kernels::tmsgd_step (the
// contract: tmsgd_kernels/step_contract.py). The optimizer validates before it calls; these guard
// direct calls of the op. Everything is checked before anything is written, so a bad call leaves
// every tensor as it was.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/irange.h>

#include <optional>
#include <utility>
#include <vector>

#include "step_signature.h"

namespace tmsgd {

// What the checks hand the kernels besides the arguments themselves.
struct CheckedCall {
  // The grads, each one with its param's layout: the grad itself, or a copy where its strides
  // differ from the param's (the kernels step every tensor of a param as one flat memory range).
  std::vector<at::Tensor> grads;
  // True when the counts live on the CPU (the caller decides everything count-dependent on the
  // host); false when they live on the params' GPU and the kernels read them there.
  bool counts_on_host = true;
};

namespace detail {

inline bool is_storage_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Same sizes, and the same stride wherever a dimension has more than one element (a size-1
// dimension's stride never addresses anything): element i of one sits at the same offset from
// data_ptr() as element i of the other.
inline bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) {
    return false;
  }
  for (const auto d : c10::irange(a.dim())) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) {
      return false;
    }
  }
  return true;
}

// A state tensor of param i: same device and layout as the param, and the expected dtype.
inline void check_state(const char* name, size_t i, const at::Tensor& t, const at::Tensor& param,
                        at::ScalarType dtype) {
  TORCH_CHECK(t.device() == param.device(), "tmsgd_step: ", name, "[", i, "] is on ", t.device(),
              ", params[", i, "] on ", param.device());
  TORCH_CHECK(t.scalar_type() == dtype, "tmsgd_step: ", name, "[", i, "] has dtype ",
              t.scalar_type(), ", expected ", dtype);
  TORCH_CHECK(same_layout(t, param), "tmsgd_step: ", name, "[", i,
              "] must have the shape and strides of params[", i, "] (", param.sizes(), ", ",
              param.strides(), "), got ", t.sizes(), ", ", t.strides());
}

// lr_tensor, grad_scale, found_inf: one element, on the params' device or the CPU.
inline void check_scalar_tensor(const char* name, const std::optional<at::Tensor>& t,
                                const at::Device& device, bool integers_allowed) {
  if (!t.has_value()) {
    return;
  }
  const auto dtype = t->scalar_type();
  const bool real = at::isFloatingType(dtype) ||
                    (integers_allowed && at::isIntegralType(dtype, /*includeBool=*/false));
  TORCH_CHECK(t->numel() == 1 && real, "tmsgd_step: ", name, " must be a one-element ",
              integers_allowed ? "real" : "floating-point", " tensor, got ", t->sizes(), " ",
              dtype);
  TORCH_CHECK(t->device() == device || t->is_cpu(), "tmsgd_step: ", name, " is on ",
              t->device(), "; it must be on the params' device ", device, " or on the CPU");
}

// An 8-bit history's geometry (tmsgd_kernels/int8_history.py): a param's dim-0 slices ("rows")
// are consecutive ranges of memory, each cut into blocks of kInt8Block elements (the last one of
// a row may be short), and every block has one fp32 scale.
constexpr int64_t kInt8Block = 256;

struct Int8Rows {
  int64_t rows;
  int64_t per_row;
  int64_t blocks_per_row() const { return (per_row + kInt8Block - 1) / kInt8Block; }
};

inline Int8Rows int8_rows(const at::Tensor& param) {
  int64_t per_row = 1;
  for (const auto d : c10::irange(int64_t(1), param.dim())) {
    per_row *= param.size(d);
  }
  return {param.size(0), per_row};
}

// The block scales `name`[i] of an 8-bit tensor (a history slot or a momentum buffer) of param p.
inline void check_int8_scales(const char* name, size_t i, const at::Tensor& p,
                              const at::Tensor& s) {
  const Int8Rows r = int8_rows(p);
  TORCH_CHECK(s.device() == p.device() && s.scalar_type() == at::kFloat && s.dim() == 2 &&
                  s.size(0) == r.rows && s.size(1) == r.blocks_per_row() && s.is_contiguous(),
              "tmsgd_step: ", name, "[", i, "] must be a contiguous fp32 tensor of shape (",
              r.rows, ", ", r.blocks_per_row(), ") on ", p.device(),
              " (one scale per block of ", kInt8Block, " elements of a dim-0 slice of params[", i,
              "] ", p.sizes(), "), got ", s.scalar_type(), " ", s.sizes(), " strides ",
              s.strides(), " on ", s.device());
}

// Param i of an int8-history call: rows in memory order, and both slots' scales in their shape.
inline void check_int8_param(size_t i, const at::Tensor& p, at::TensorList even_scales,
                             at::TensorList odd_scales) {
  TORCH_CHECK(p.scalar_type() != at::kDouble, "tmsgd_step: an int8 history needs fp32, fp16 or ",
              "bf16 params, params[", i, "] is fp64");
  TORCH_CHECK(p.dim() >= 1, "tmsgd_step: an int8 history needs params of one or more ",
              "dimensions (blocks lie within dim-0 slices); params[", i, "] is 0-dim");
  const Int8Rows r = int8_rows(p);
  TORCH_CHECK(r.rows <= 1 || r.per_row == 0 || p.stride(0) == r.per_row, "tmsgd_step: an int8 ",
              "history needs each param's dim-0 slices contiguous in memory (dim 0 outermost); ",
              "params[", i, "] has sizes ", p.sizes(), ", strides ", p.strides());
  check_int8_scales("delta_even_scales", i, p, even_scales[i]);
  check_int8_scales("delta_odd_scales", i, p, odd_scales[i]);
}

}  // namespace detail

inline CheckedCall check_step_arguments(const StepArguments& a) {
  const at::TensorList params = a.params, grads = a.grads, delta_even = a.delta_even,
                       delta_odd = a.delta_odd, momentum_buffers = a.momentum_buffers,
                       steps = a.steps;
  const double momentum = a.scalars.momentum;
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && delta_even.size() == n && delta_odd.size() == n &&
                  steps.size() == n,
              "tmsgd_step: every list must have one entry per param: ", n, " params, ",
              grads.size(), " grads, ", delta_even.size(), " delta_even, ", delta_odd.size(),
              " delta_odd, ", steps.size(), " steps");
  const bool int8_history = n != 0 && delta_even.size() == n &&
                           delta_even[0].scalar_type() == at::kChar;
  const size_t scales = int8_history ? n : 0;
  TORCH_CHECK(a.delta_even_scales.size() == scales && a.delta_odd_scales.size() == scales,
              "tmsgd_step: delta_even_scales and delta_odd_scales must have ", scales,
              " entries (one per param with an int8 history, none with a float history), got ",
              a.delta_even_scales.size(), " and ", a.delta_odd_scales.size());
  const size_t buffers = momentum != 0 ? n : 0;
  TORCH_CHECK(momentum_buffers.size() == buffers, "tmsgd_step: momentum_buffers must have ",
              buffers, " entries (momentum = ", momentum, " and ", n, " params), got ",
              momentum_buffers.size());
  // An 8-bit momentum buffer comes only with an 8-bit history (same blocks, same params).
  const bool int8_momentum = !a.momentum_scales.empty();
  TORCH_CHECK(!int8_momentum || (int8_history && buffers != 0 && a.momentum_scales.size() == n),
              "tmsgd_step: momentum_scales must be empty, or have one entry per param (", n,
              ") with an int8 history and momentum != 0; got ", a.momentum_scales.size(),
              " entries, momentum = ", momentum, ", history ",
              int8_history ? "int8" : "float");
  CheckedCall call;
  if (n == 0) {
    return call;
  }

  const auto device = params[0].device();
  const auto dtype = params[0].scalar_type();
  const auto history_dtype = delta_even[0].scalar_type();
  TORCH_CHECK(detail::is_storage_dtype(dtype), "tmsgd_step: params must be fp64, fp32, fp16 or ",
              "bf16, got ", dtype);
  TORCH_CHECK(detail::is_storage_dtype(history_dtype) || int8_history, "tmsgd_step: delta_even ",
              "and delta_odd must be fp64, fp32, fp16, bf16 or int8, got ", history_dtype);
  call.counts_on_host = steps[0].is_cpu();
  for (const auto i : c10::irange(n)) {
    const auto& p = params[i];
    TORCH_CHECK(p.device() == device && p.scalar_type() == dtype, "tmsgd_step: params[", i,
                "] is ", p.scalar_type(), " on ", p.device(), ", params[0] ", dtype, " on ",
                device, ": one call steps params of one dtype on one device");
    TORCH_CHECK(p.is_non_overlapping_and_dense(), "tmsgd_step: params[", i,
                "] must be dense and non-overlapping, got sizes ", p.sizes(), ", strides ",
                p.strides());
    const auto& g = grads[i];
    TORCH_CHECK(g.device() == device && g.scalar_type() == dtype && g.sizes() == p.sizes(),
                "tmsgd_step: grads[", i, "] is ", g.scalar_type(), " ", g.sizes(), " on ",
                g.device(), ", its param ", dtype, " ", p.sizes(), " on ", device);
    detail::check_state("delta_even", i, delta_even[i], p, history_dtype);
    detail::check_state("delta_odd", i, delta_odd[i], p, history_dtype);
    if (int8_history) {
      detail::check_int8_param(i, p, a.delta_even_scales, a.delta_odd_scales);
    }
    if (buffers != 0) {
      detail::check_state("momentum_buffers", i, momentum_buffers[i], p,
                          int8_momentum ? at::kChar : dtype);
    }
    if (int8_momentum) {
      detail::check_int8_scales("momentum_scales", i, p, a.momentum_scales[i]);
    }
    const auto& count = steps[i];
    TORCH_CHECK(count.numel() == 1 && count.scalar_type() == at::kLong, "tmsgd_step: steps[", i,
                "] must be a one-element int64 tensor, got ", count.sizes(), " ",
                count.scalar_type());
    const bool placed =
        count.is_cpu() ? call.counts_on_host : !call.counts_on_host && count.device() == device;
    TORCH_CHECK(placed,
                "tmsgd_step: steps[", i, "] is on ", count.device(), ", steps[0] on ",
                steps[0].device(), ": the counts must be all on the CPU or all on the params' "
                "device ", device);
  }
  detail::check_scalar_tensor("lr_tensor", a.scalars.lr_tensor, device,
                              /*integers_allowed=*/true);
  detail::check_scalar_tensor("grad_scale", a.grad_scale, device, /*integers_allowed=*/false);
  detail::check_scalar_tensor("found_inf", a.found_inf, device, /*integers_allowed=*/false);

  // Nothing has been written yet; only now are the re-laid-out grads allocated.
  call.grads.reserve(n);
  for (const auto i : c10::irange(n)) {
    if (detail::same_layout(grads[i], params[i])) {
      call.grads.push_back(grads[i]);
    } else {
      // empty_like keeps a dense param's strides exactly (MemoryFormat::Preserve).
      call.grads.push_back(at::empty_like(params[i]).copy_(grads[i]));
    }
  }
  return call;
}

}  // namespace tmsgd
