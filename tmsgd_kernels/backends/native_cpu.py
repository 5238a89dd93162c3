"""The `cpu` backend: the fused C++ kernel of csrc/ (at::parallel_for + at::vec::Vectorized,
compiled per instruction set), through the op tmsgd_kernels::tmsgd_step."""

from __future__ import annotations

import torch

from . import native

name = "cpu"
step = native.step


def unavailable_reason(device: torch.device) -> str | None:
    if device.type != "cpu":
        return f"the cpu backend steps CPU tensors only, not {device.type} tensors"
    return native.unavailable_reason("CPU")
