// The CUDA implementation of tmsgd_kernels::tmsgd_step (host side): fills the kernel's tensor
// table, converts lr / grad_scale / found_inf to the dtypes the kernel reads (device ops, no host
// synchronization), and launches on the current stream: one step launch per kMaxTensors params,
// then one single-thread launch that increments the step count. The increment is a separate
// kernel because every block of every step launch must read the old count first; stream order
// guarantees that without a grid-wide barrier or an atomic counter.
// Compiled by the host compiler; only csrc/cuda_kernel.cu goes through nvcc.
#ifdef TMSGD_WITH_CUDA

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cuda_table.h"
#include "op_checks.h"

namespace tmsgd::cuda {

namespace {

Dtype to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return Dtype::kFloat;
    case at::kDouble: return Dtype::kDouble;
    case at::kHalf: return Dtype::kHalf;
    case at::kBFloat16: return Dtype::kBFloat16;
    default: TORCH_CHECK(false, "tmsgd_step: unsupported dtype ", t);
  }
}

int multiprocessors(int device) {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

void tmsgd_step_cuda(at::TensorList params, at::TensorList grads, const at::Tensor& history,
                     const std::optional<at::Tensor>& momentum_buffer, const at::Tensor& step,
                     double lr, const std::optional<at::Tensor>& lr_tensor, double b1, double b2,
                     double momentum, double dampening, double weight_decay, bool nesterov,
                     bool maximize, int64_t switch_step,
                     const std::optional<at::Tensor>& grad_scale,
                     const std::optional<at::Tensor>& found_inf) {
  const std::vector<int64_t> offsets = check_and_offsets(
      params, grads, history, momentum_buffer, step, lr_tensor, momentum, grad_scale, found_inf);
  if (params.empty()) {
    return;  // as the pure-PyTorch backend: an empty bucket is not a step
  }
  const c10::cuda::CUDAGuard guard(history.device());
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  const auto opmath = params[0].scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  // Temporaries stay alive until the launches below are enqueued; the caching allocator keeps
  // their memory for this stream's later work only, so the kernels read them safely.
  const at::Tensor lr_device = lr_tensor.has_value() ? lr_tensor->to(opmath) : at::Tensor();
  const at::Tensor scale_device = grad_scale.has_value() ? grad_scale->to(opmath) : at::Tensor();
  const at::Tensor inf_device = found_inf.has_value() ? found_inf->to(at::kFloat) : at::Tensor();

  CudaArgs args;
  args.history = history.data_ptr();
  args.history_row_stride = history.stride(0);
  args.momentum = momentum_buffer.has_value() ? momentum_buffer->data_ptr() : nullptr;
  args.step = step.data_ptr<int64_t>();
  args.lr = lr_device.defined() ? lr_device.data_ptr() : nullptr;
  args.lr_value = lr;
  args.grad_scale = scale_device.defined() ? scale_device.data_ptr() : nullptr;
  args.found_inf = inf_device.defined() ? inf_device.data_ptr<float>() : nullptr;
  args.b1 = b1;
  args.b2 = b2;
  args.momentum_factor = momentum;
  args.dampening = dampening;
  args.weight_decay = weight_decay;
  args.switch_step = switch_step;
  args.nesterov = nesterov;
  args.maximize = maximize;
  const Dtype param_dtype = to_dtype(params[0].scalar_type());
  const Dtype history_dtype = to_dtype(history.scalar_type());
  // Enough resident blocks to saturate memory bandwidth; more only add scheduling work.
  const int64_t max_grid = int64_t(multiprocessors(history.get_device())) * 8;

  CudaTable table;
  auto flush = [&]() {
    const int64_t chunks = table.first_chunk[table.count];
    if (chunks > 0) {
      const int grid = static_cast<int>(std::min(chunks, max_grid));
      launch_step(table, args, param_dtype, history_dtype, grid, stream);
    }
    table.count = 0;
  };
  table.count = 0;
  table.first_chunk[0] = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t numel = offsets[i + 1] - offsets[i];
    if (numel == 0) {
      continue;
    }
    if (table.count == kMaxTensors) {
      flush();
      table.first_chunk[0] = 0;
    }
    const int64_t t = table.count;
    table.params[t] = params[i].data_ptr();
    table.grads[t] = grads[i].data_ptr();
    table.column[t] = offsets[i];
    table.column[t + 1] = offsets[i + 1];
    table.first_chunk[t + 1] = table.first_chunk[t] + (numel + kChunk - 1) / kChunk;
    table.count = t + 1;
  }
  flush();
  launch_increment(step.data_ptr<int64_t>(), args.found_inf, stream);
}

}  // namespace

}  // namespace tmsgd::cuda

TORCH_LIBRARY_IMPL(tmsgd_kernels, CUDA, m) {
  m.impl("tmsgd_step", &tmsgd::cuda::tmsgd_step_cuda);
}

#endif  // TMSGD_WITH_CUDA
