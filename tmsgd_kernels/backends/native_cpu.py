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


def step_bucket(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    history: torch.Tensor,
    momentum_buffer: torch.Tensor | None,
    step: torch.Tensor,
    lr: float | torch.Tensor,
    b1: float,
    b2: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    switch_step: int,
    grad_scale: torch.Tensor | None,
    found_inf: torch.Tensor | None,
) -> None:
    if not params:
        return
    native_op.tmsgd_step(params, grads, history, momentum_buffer, step, lr, b1, b2, momentum,
                         dampening, weight_decay, nesterov, maximize, switch_step, grad_scale,
                         found_inf)
