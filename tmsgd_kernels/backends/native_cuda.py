"""The `cuda` backend: the fused multi-tensor CUDA kernel of csrc/, through the custom op
tmsgd_kernels::tmsgd_step (one launch per bucket, everything step-dependent read on the device)."""

from __future__ import annotations

import torch

from .. import native_op

name = "cuda"


def unavailable_reason(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"the cuda backend steps CUDA tensors only, not {device.type} tensors"
    if native_op.load_error is not None:
        return native_op.load_error
    if not native_op.has_kernel("CUDA"):
        return (
            "the extension was built without CUDA; rebuild it with a CUDA build of torch and "
            "a CUDA toolkit (CUDA_HOME set, nvcc on it): `pip install --no-build-isolation .`"
        )
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    return None


# Both native backends call the same op; the dispatcher picks the CPU or CUDA kernel.
step_bucket = native_op.tmsgd_step
