// The custom op's schema (DESIGN.md section 3). Everything the step mutates is marked (x!): the
// params, the history, the momentum buffer and the step count; grads and the scalars are read.
// lr is either the float `lr` or, when given, the 0-dim `lr_tensor` on the params' device.
#include <torch/library.h>

TORCH_LIBRARY(tmsgd_kernels, m) {
  m.def(
      "tmsgd_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!) history, "
      "Tensor(c!)? momentum_buffer, Tensor(d!) step, float lr, Tensor? lr_tensor, float b1, "
      "float b2, float momentum, float dampening, float weight_decay, bool nesterov, "
      "bool maximize, int switch_step, Tensor? grad_scale, Tensor? found_inf) -> ()");
}
