"""The `cuda` backend: the fused multi-tensor CUDA kernel of csrc/, through the op
tmsgd_kernels::tmsgd_step (one launch per table of tensors)."""

from __future__ import annotations

import torch

from . import native

name = "cuda"
step = native.step


def unavailable_reason(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"the cuda backend steps CUDA tensors only, not {device.type} tensors"
    reason = native.unavailable_reason("CUDA")
    if reason is not None:
        return reason
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    return None
