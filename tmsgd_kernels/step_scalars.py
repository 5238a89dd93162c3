"""StepScalars: the scalars of one step, under the same name in Python, C++ and Triton.

The C++ kernels receive them as the op's scalar arguments and build their own `StepScalars<T>`
(csrc/tmsgd_update.h) per tensor; the Triton kernels take them as kernel arguments
(triton_kernels/kernel_arguments.py). The delta-form coefficients b1, b2 come from the paper's
(a0, a1, a2) through `coefficients.delta_coefficients`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .coefficients import delta_coefficients


@dataclass(frozen=True)
class StepScalars:
    """Learning rate (a float, or a one-element tensor), the delta-form coefficients b1 and b2,
    SGD's direction options, and the warm-up length in steps."""

    lr: float | torch.Tensor
    b1: float = 0.5
    b2: float = -0.5
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    maximize: bool = False
    switch_step: int = 0

    @classmethod
    def from_group(cls, group: dict, lr: float | torch.Tensor) -> StepScalars:
        """From a param group's hyperparameters (paper coefficients a0, a1, a2)."""
        b1, b2 = delta_coefficients(group["coefficients"])
        return cls(lr, b1, b2, group["momentum"], group["dampening"], group["weight_decay"],
                   group["nesterov"], group["maximize"], group["switch_step"])

    def op_arguments(self) -> tuple:
        """The scalars in the op schema's order (tmsgd_kernels/ops.py): lr, lr_tensor, b1, b2,
        momentum, dampening, weight_decay, nesterov, maximize, switch_step."""
        lr_tensor = self.lr if isinstance(self.lr, torch.Tensor) else None
        lr_value = 0.0 if lr_tensor is not None else float(self.lr)
        return (lr_value, lr_tensor, float(self.b1), float(self.b2), float(self.momentum),
                float(self.dampening), float(self.weight_decay), bool(self.nesterov),
                bool(self.maximize), int(self.switch_step))
