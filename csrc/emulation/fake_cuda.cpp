// "Fake CUDA" tensors: tensors on device cuda:<index> whose memory is host memory, so that the
// dispatcher sends tmsgd_kernels::tmsgd_step on them to its CUDA implementation
// (csrc/cuda_step.cpp), whose kernels the emulated device then runs on that memory.
//
//   tmsgd_emulation::fake_cuda(Tensor host, int device=0) -> Tensor
//       a CUDA tensor sharing `host`'s memory, sizes and strides (host stays alive with it)
//
// The op's CUDA path also makes a few tensors of its own on the params' device (a grad copied
// into its param's layout, lr / grad_scale / found_inf converted to the dtype the kernels read)
// and reads CUDA scalars on the host (.item()). A CPU-only torch has no CUDA kernels for that,
// so this file gives the fake device the four ATen kernels those need, all on host memory:
// empty.memory_format and empty_strided (allocate), copy_ (between fake CUDA and CPU tensors)
// and _local_scalar_dense (read one element). tests/cuda_emulation.py refuses to load this
// library into a torch built with CUDA, whose own CUDA kernels these would replace.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/from_blob.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <optional>

namespace tmsgd::emulation {

namespace {

at::Tensor fake_cuda(const at::Tensor& host, int64_t index) {
  TORCH_CHECK(host.is_cpu(), "fake_cuda: expects a CPU tensor, got one on ", host.device());
  TORCH_CHECK(host.layout() == at::kStrided, "fake_cuda: expects a strided tensor");
  const c10::Device device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  // The deleter holds `host`, so its memory lives as long as the fake tensor.
  return at::from_blob(
      host.data_ptr(), host.sizes(), host.strides(), [host](void*) {},
      host.options().device(device), device);
}

// A CPU tensor over a fake CUDA tensor's memory (for as long as the caller holds `t`).
at::Tensor host_view(const at::Tensor& t) {
  if (t.is_cpu()) {
    return t;
  }
  TORCH_CHECK(t.is_cuda(), "host emulation: expected a CPU or (fake) CUDA tensor, got one on ",
              t.device());
  return at::from_blob(t.data_ptr(), t.sizes(), t.strides(), t.options().device(at::kCPU));
}

int64_t index_of(const std::optional<at::Device>& device) {
  return device.has_value() && device->has_index() ? device->index() : current_device();
}

at::TensorOptions host_options(std::optional<at::ScalarType> dtype,
                               std::optional<at::Layout> layout) {
  return at::TensorOptions().dtype(dtype).layout(layout).device(at::kCPU);
}

at::Tensor empty(at::IntArrayRef size, std::optional<at::ScalarType> dtype,
                 std::optional<at::Layout> layout, std::optional<at::Device> device,
                 std::optional<bool>, std::optional<at::MemoryFormat> memory_format) {
  return fake_cuda(at::empty(size, host_options(dtype, layout), memory_format), index_of(device));
}

at::Tensor empty_strided(at::IntArrayRef size, at::IntArrayRef stride,
                         std::optional<at::ScalarType> dtype, std::optional<at::Layout> layout,
                         std::optional<at::Device> device, std::optional<bool>) {
  return fake_cuda(at::empty_strided(size, stride, host_options(dtype, layout)),
                   index_of(device));
}

at::Tensor& copy_(at::Tensor& self, const at::Tensor& src, bool non_blocking) {
  host_view(self).copy_(host_view(src), non_blocking);
  return self;
}

at::Scalar local_scalar_dense(const at::Tensor& self) { return host_view(self).item(); }

}  // namespace

}  // namespace tmsgd::emulation

TORCH_LIBRARY_FRAGMENT(tmsgd_emulation, m) {
  m.def("fake_cuda(Tensor host, int device=0) -> Tensor", &tmsgd::emulation::fake_cuda);
}

TORCH_LIBRARY_IMPL(aten, CUDA, m) {
  m.impl("empty.memory_format", TORCH_FN(tmsgd::emulation::empty));
  m.impl("empty_strided", TORCH_FN(tmsgd::emulation::empty_strided));
  m.impl("copy_", TORCH_FN(tmsgd::emulation::copy_));
  m.impl("_local_scalar_dense", TORCH_FN(tmsgd::emulation::local_scalar_dense));
}
