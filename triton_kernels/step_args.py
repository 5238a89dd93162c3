"""The arguments every update kernel takes besides its tensors, gathered once per bucket step."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton.language as tl


@dataclass(frozen=True)
class StepArgs:
    history: torch.Tensor
    momentum_buffer: torch.Tensor | None
    step: torch.Tensor
    lr: float
    lr_tensor: torch.Tensor | None
    grad_scale: torch.Tensor | None
    found_inf: torch.Tensor | None
    b1: float
    b2: float
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    maximize: bool
    switch_step: int
    compute: tl.dtype

    def momentum_or(self, stand_in: torch.Tensor) -> torch.Tensor:
        # Without momentum the kernel never touches this pointer (HAS_MOMENTUM is a constexpr).
        return stand_in if self.momentum_buffer is None else self.momentum_buffer

    def scalar_args(self) -> tuple:
        """step_ptr, lr, lr_ptr, grad_scale_ptr, found_inf_ptr, b1, b2, momentum, gain,
        weight_decay, switch_step: absent tensors are replaced by `step`, never dereferenced."""
        step = self.step
        return (
            step,
            float(self.lr),
            step if self.lr_tensor is None else self.lr_tensor,
            step if self.grad_scale is None else self.grad_scale,
            step if self.found_inf is None else self.found_inf,
            float(self.b1),
            float(self.b2),
            float(self.momentum),
            # 1 - dampening in fp64 on the host, as the reference computes it.
            1.0 - float(self.dampening),
            float(self.weight_decay),
            int(self.switch_step),
        )

    def flags(self) -> dict:
        return dict(
            HAS_MOMENTUM=self.momentum_buffer is not None,
            NESTEROV=bool(self.nesterov),
            MAXIMIZE=bool(self.maximize),
            HAS_WEIGHT_DECAY=self.weight_decay != 0,
            LR_ON_DEVICE=self.lr_tensor is not None,
            HAS_GRAD_SCALE=self.grad_scale is not None,
            HAS_FOUND_INF=self.found_inf is not None,
            COMPUTE=self.compute,
            # The largest power of two (up to 16) dividing the history's row stride.
            HISTORY_ALIGN=math.gcd(self.history.stride(0), 16),
        )
