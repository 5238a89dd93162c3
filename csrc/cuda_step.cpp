// The CUDA implementation of tmsgd_kernels::tmsgd_step (host side): checks the call, fills the
// kernel's tensor tables (Int8Table with an 8-bit history) and launches on the current stream,
// one step launch per table.
//
// Two modes, chosen by where the counts live:
//   host mode (counts on the CPU): the host reads every count, groups the tensors by what the
//     count decides (history parity, first momentum step, warm-up) and launches each group with
//     its flags as kernel arguments (normally one group: the params of a call usually share
//     their count); it then advances the CPU counts itself.
//   device mode (counts on the GPU, CUDA-graph capturable): every block reads its tensor's count
//     from the table; one more launch, after all step launches, advances the counts. It is a
//     separate kernel because every block must read the old count first, which stream order
//     guarantees without a grid-wide barrier.
// lr_tensor, grad_scale and found_inf on the GPU are read by the kernels (converted to the dtype
// they read by device ops, no host synchronization); on the CPU they are read here. The other
// scalars reach the kernels converted to the opmath dtype, as KernelScalars.
// Compiled by the host compiler; only csrc/cuda_kernel.cu goes through nvcc.
#ifdef TMSGD_WITH_CUDA

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <array>
#include <type_traits>
#include <vector>

#include "cuda_table.h"
#include "op_checks.h"
#include "step_signature.h"

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

// What every launch of a call shares: the tensors, the dtypes and where to launch.
struct Launcher {
  at::TensorList params;
  const std::vector<at::Tensor>& grads;
  at::TensorList delta_even;
  at::TensorList delta_odd;
  at::TensorList delta_even_scales;  // empty without an 8-bit history
  at::TensorList delta_odd_scales;
  at::TensorList momentum_buffers;
  at::TensorList momentum_scales;  // non-empty only for 8-bit buffers (with an 8-bit history)
  at::TensorList steps;
  Dtype param_dtype;
  Dtype history_dtype;
  Device device;  // its multiprocessors bound the grid (launch_step)
  void* stream;

  // Steps the tensors `indices` with `args`, kMaxTensors per launch (empty tensors skipped).
  template <typename T>
  void step(const std::vector<size_t>& indices, const KernelScalars<T>& args) const {
    if constexpr (std::is_same_v<T, float>) {
      if (!delta_even_scales.empty()) {
        return step_int8(indices, args);
      }
    }
    const bool momentum = !momentum_buffers.empty();
    CudaTable table;
    auto flush = [&]() {
      if (table.count > 0) {
        launch_step(table, args, param_dtype, history_dtype, momentum, device, stream);
      }
      table.count = 0;
    };
    for (const size_t i : indices) {
      const int64_t numel = params[i].numel();
      if (numel == 0) {
        continue;
      }
      if (table.count == kMaxTensors) {
        flush();
      }
      const int64_t t = table.count;
      table.params[t] = params[i].data_ptr();
      table.grads[t] = grads[i].data_ptr();
      table.delta_even[t] = delta_even[i].data_ptr();
      table.delta_odd[t] = delta_odd[i].data_ptr();
      table.momentum[t] = momentum ? momentum_buffers[i].data_ptr() : nullptr;
      table.steps[t] = args.counts_on_device ? steps[i].data_ptr<int64_t>() : nullptr;
      table.numel[t] = numel;
      const int64_t before = t == 0 ? 0 : table.chunk_end[t - 1];
      table.chunk_end[t] = before + (numel + kChunk - 1) / kChunk;
      table.count = t + 1;
    }
    flush();
  }

  // The same for an 8-bit history (float opmath: the op checks refuse fp64 params with it),
  // kMaxInt8Tensors per launch, tensors without blocks skipped.
  void step_int8(const std::vector<size_t>& indices, const KernelScalars<float>& args) const {
    const bool momentum = !momentum_buffers.empty();
    const bool int8_momentum = !momentum_scales.empty();
    const Buffer buffer = int8_momentum ? Buffer::kInt8 : momentum ? Buffer::kParam : Buffer::kNone;
    Int8Table table;
    auto flush = [&]() {
      if (table.count > 0) {
        launch_int8_step(table, args, param_dtype, buffer, device, stream);
      }
      table.count = 0;
    };
    for (const size_t i : indices) {
      const detail::Int8Rows rows = detail::int8_rows(params[i]);
      const int64_t blocks = rows.rows * rows.blocks_per_row();
      if (blocks == 0) {
        continue;
      }
      if (table.count == kMaxInt8Tensors) {
        flush();
      }
      const int64_t t = table.count;
      table.params[t] = params[i].data_ptr();
      table.grads[t] = grads[i].data_ptr();
      table.delta_even[t] = delta_even[i].data_ptr();
      table.delta_odd[t] = delta_odd[i].data_ptr();
      table.even_scales[t] = delta_even_scales[i].data_ptr<float>();
      table.odd_scales[t] = delta_odd_scales[i].data_ptr<float>();
      table.momentum[t] = momentum ? momentum_buffers[i].data_ptr() : nullptr;
      table.momentum_scales[t] = int8_momentum ? momentum_scales[i].data_ptr<float>() : nullptr;
      table.steps[t] = args.counts_on_device ? steps[i].data_ptr<int64_t>() : nullptr;
      table.per_row[t] = rows.per_row;
      table.blocks[t] = blocks;
      const int64_t before = t == 0 ? 0 : table.chunk_end[t - 1];
      table.chunk_end[t] = before + (blocks + kInt8BlocksPerChunk - 1) / kInt8BlocksPerChunk;
      table.count = t + 1;
    }
    flush();
  }
};

// Host mode: one group per combination of the flags the count decides, in a fixed order.
template <typename T>
void step_counts_on_host(const Launcher& launcher, KernelScalars<T> args, bool momentum,
                         int64_t switch_step) {
  const at::TensorList steps = launcher.steps;
  std::array<std::vector<size_t>, 8> groups;
  for (size_t i = 0; i < steps.size(); ++i) {
    const int64_t count = *steps[i].data_ptr<int64_t>();
    TORCH_CHECK(count >= 0, "tmsgd_step: steps[", i, "] is negative (", count, ")");
    UpdateScalars<T> flags = args.scalars;
    set_count(flags, count, switch_step);
    // Without momentum the first step is like any other: no reason to split the launch.
    const bool first = momentum && flags.first;
    groups[flags.parity | int(first) << 1 | int(flags.multistep) << 2].push_back(i);
  }
  for (size_t key = 0; key < groups.size(); ++key) {
    if (groups[key].empty()) {
      continue;
    }
    args.scalars.parity = int(key & 1);
    args.scalars.first = (key & 2) != 0;
    args.scalars.multistep = (key & 4) != 0;
    launcher.step(groups[key], args);
  }
  for (const auto& count : steps) {
    *count.data_ptr<int64_t>() += 1;  // the kernels never read these CPU counts
  }
}

// Device mode: one group; the counts advance on the device after every step launch.
template <typename T>
void step_counts_on_device(const Launcher& launcher, KernelScalars<T> args, int64_t switch_step) {
  const at::TensorList steps = launcher.steps;
  std::vector<size_t> all(steps.size());
  for (size_t i = 0; i < all.size(); ++i) {
    all[i] = i;
  }
  args.counts_on_device = true;
  args.switch_step = switch_step;
  launcher.step(all, args);
  CountTable counts;
  for (size_t i = 0; i < steps.size(); ++i) {
    counts.steps[counts.count++] = steps[i].data_ptr<int64_t>();
    if (counts.count == kMaxCounts || i + 1 == steps.size()) {
      launch_increment(counts, args.found_inf, launcher.stream);
      counts.count = 0;
    }
  }
}

// A one-element tensor the kernels read in T: its value, read here, when it is on the CPU (no
// synchronization); else `given` (the value used when the tensor is absent), and `pointer` set
// to its copy in T on the device, which `copy` keeps alive.
template <typename T>
T value_or_pointer(const std::optional<at::Tensor>& tensor, T given, at::Tensor& copy,
                   const T*& pointer) {
  if (!tensor.has_value()) {
    return given;
  }
  if (tensor->is_cpu()) {
    return tensor->item().to<T>();
  }
  copy = tensor->to(c10::CppTypeToScalarType<T>::value);
  pointer = copy.data_ptr<T>();
  return given;
}

// The scalars for opmath T, and the launches. Tensors made here (the device copies of lr,
// grad_scale and found_inf in T / float32) stay alive until the launches are enqueued; the
// caching allocator reuses their memory only for this stream's later work, so the kernels read
// them safely.
template <typename T>
void step_typed(const Launcher& launcher, bool counts_on_host, const StepArguments& a) {
  const StepScalars& s = a.scalars;
  KernelScalars<T> args;
  at::Tensor inf_device;
  if (a.found_inf.has_value()) {
    if (a.found_inf->is_cpu() || counts_on_host) {
      // The host must know found_inf: in host mode it decides whether the host advances the CPU
      // counts. On the GPU this .item() synchronizes with the device, once per call.
      if (a.found_inf->item<double>() != 0) {
        return;  // AMP found an inf/nan: nothing changes, not even the counts
      }
    } else {
      inf_device = a.found_inf->to(at::kFloat);
      args.found_inf = inf_device.data_ptr<float>();
    }
  }
  at::Tensor lr_device, scale_device;
  const T lr = value_or_pointer<T>(s.lr_tensor, static_cast<T>(s.lr), lr_device, args.lr_tensor);
  const T scale = value_or_pointer<T>(a.grad_scale, T(1), scale_device, args.grad_scale);
  args.scalars = update_scalars<T>(s, lr, a.grad_scale.has_value(), scale);
  if (counts_on_host) {
    step_counts_on_host(launcher, args, s.momentum != 0, s.switch_step);
  } else {
    step_counts_on_device(launcher, args, s.switch_step);
  }
}

void step_cuda(const StepArguments& a) {
  const CheckedCall checked = check_step_arguments(a);
  if (a.params.empty()) {
    return;
  }
  const auto device = a.params[0].device();
  const c10::cuda::CUDAGuard guard(device);
  // An 8-bit history's codes are int8; its kernel is told the param dtype only.
  const bool int8_history = !a.delta_even_scales.empty();
  const Launcher launcher{a.params,
                          checked.grads,
                          a.delta_even,
                          a.delta_odd,
                          a.delta_even_scales,
                          a.delta_odd_scales,
                          a.momentum_buffers,
                          a.momentum_scales,
                          a.steps,
                          to_dtype(a.params[0].scalar_type()),
                          int8_history ? Dtype::kFloat : to_dtype(a.delta_even[0].scalar_type()),
                          Device{device.index(), multiprocessors(device.index())},
                          c10::cuda::getCurrentCUDAStream().stream()};
  if (a.params[0].scalar_type() == at::kDouble) {
    step_typed<double>(launcher, checked.counts_on_host, a);
  } else {
    step_typed<float>(launcher, checked.counts_on_host, a);
  }
}

}  // namespace

}  // namespace tmsgd::cuda

TMSGD_REGISTER_STEP(CUDA, tmsgd::cuda::step_cuda)

#endif  // TMSGD_WITH_CUDA
