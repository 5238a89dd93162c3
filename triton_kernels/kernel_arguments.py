"""The step's scalars (a StepScalars, shared with the other backends) as the update kernels take
them: values and pointers in one tuple, options as constexpr flags, built once per call."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton.language as tl

from ..step_scalars import StepScalars


@dataclass(frozen=True)
class KernelArguments:
    # lr, lr_ptr, grad_scale_ptr, found_inf_ptr, b1, b2, momentum, gain, weight_decay,
    # switch_step: in the kernels' order, after their tensor arguments and the count.
    scalars: tuple
    flags: dict


def kernel_arguments(scalars: StepScalars, grad_scale: torch.Tensor | None,
                     found_inf: torch.Tensor | None, params: list[torch.Tensor]
                     ) -> KernelArguments:
    """`found_inf` only when the kernels are to read it (the counts on the device)."""
    device = params[0].device
    lr, lr_tensor = scalars.lr, None
    if isinstance(lr, torch.Tensor):
        if lr.device == device:
            lr_tensor, lr = lr, 0.0
        else:
            lr = lr.item()  # a CPU tensor with device params: a host read, no synchronization
    # Absent pointers get a stand-in the kernel never dereferences (its flag is off).
    stand_in = params[0]
    return KernelArguments(
        scalars=(
            float(lr),
            stand_in if lr_tensor is None else lr_tensor,
            stand_in if grad_scale is None else grad_scale,
            stand_in if found_inf is None else found_inf,
            float(scalars.b1),
            float(scalars.b2),
            float(scalars.momentum),
            # 1 - dampening in fp64 on the host, as the oracle computes it.
            1.0 - float(scalars.dampening),
            float(scalars.weight_decay),
            int(scalars.switch_step),
        ),
        flags=dict(
            HAS_MOMENTUM=scalars.momentum != 0,
            NESTEROV=bool(scalars.nesterov),
            MAXIMIZE=bool(scalars.maximize),
            HAS_WEIGHT_DECAY=scalars.weight_decay != 0,
            LR_ON_DEVICE=lr_tensor is not None,
            HAS_GRAD_SCALE=grad_scale is not None,
            HAS_FOUND_INF=found_inf is not None,
            COMPUTE=tl.float64 if params[0].dtype == torch.float64 else tl.float32,
        ),
    )
