"""The `cpu` backend: the fused C++ kernel of csrc/ (at::parallel_for + at::vec::Vectorized,
compiled per instruction set), through the custom op tmsgd_kernels::tmsgd_step."""

from __future__ import annotations

import torch

from .. import native_op

name = "cpu"


def unavailable_reason(device: torch.device) -> str | None:
    if device.type != "cpu":
        return f"the cpu backend steps CPU tensors only, not {device.type} tensors"
    if native_op.load_error is not None:
        return native_op.load_error
    if not native_op.has_kernel("CPU"):
        return f"the loaded extension has no CPU implementation of {native_op.OP_NAME}; " + (
            native_op.BUILD_HINT)
    return None


# Both native backends call the same op; the dispatcher picks the CPU or CUDA kernel.
step_bucket = native_op.tmsgd_step
