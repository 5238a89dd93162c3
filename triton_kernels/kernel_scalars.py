"""The step's scalars (the contract's StepScalars) as the update kernels take them: values and
pointers in one tuple, options as constexpr flags, built once per call. The CUDA kernel's
counterpart is KernelScalars<T> (csrc/cuda_table.h).

lr_tensor and grad_scale are read by the kernels when they are on the kernels' device, and here,
on the host, when they are on the CPU while the kernels run on a GPU: a CPU tensor costs no
synchronization to read, and the kernels then get its value, as the CUDA op does."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton.language as tl

from tmsgd_kernels.step_contract import StepScalars


@dataclass(frozen=True)
class KernelScalars:
    # lr, lr_tensor_ptr, grad_scale, grad_scale_ptr, found_inf_ptr, b1, b2, momentum, gain,
    # weight_decay, switch_step: in the kernels' order, after their tensor arguments and count.
    values: tuple
    flags: dict


def _on_kernels_device(tensor: torch.Tensor | None, device: torch.device) -> bool:
    return tensor is not None and tensor.device == device


def kernel_scalars(scalars: StepScalars, grad_scale: torch.Tensor | None,
                   found_inf: torch.Tensor | None, param: torch.Tensor, device: torch.device
                   ) -> KernelScalars:
    """The kernels' scalars for params of `param`'s dtype, on `device` (the device whose memory
    the kernels read: the params'). `found_inf` only when the kernels are to read it (the
    caller reads a CPU one, or any one in host mode, itself)."""
    lr_tensor = scalars.lr_tensor
    lr_on_device = _on_kernels_device(lr_tensor, device)
    scale_on_device = _on_kernels_device(grad_scale, device)
    lr = scalars.lr if lr_tensor is None or lr_on_device else lr_tensor.item()
    scale = 1.0 if grad_scale is None or scale_on_device else grad_scale.item()
    # Absent pointers get a stand-in the kernel never dereferences (its flag is off).
    return KernelScalars(
        values=(
            float(lr),
            lr_tensor if lr_on_device else param,
            float(scale),
            grad_scale if scale_on_device else param,
            param if found_inf is None else found_inf,
            float(scalars.b1),
            float(scalars.b2),
            float(scalars.momentum),
            # 1 - dampening in fp64 on the host, as the oracle computes it.
            1.0 - float(scalars.dampening),
            float(scalars.weight_decay),
            int(scalars.switch_step),
        ),
        # bool(): an int option would compile a variant of its own.
        flags=dict(
            HAS_MOMENTUM=scalars.momentum != 0,
            NESTEROV=bool(scalars.nesterov),
            MAXIMIZE=bool(scalars.maximize),
            HAS_WEIGHT_DECAY=scalars.weight_decay != 0,
            LR_ON_DEVICE=lr_on_device,
            HAS_GRAD_SCALE=grad_scale is not None,
            GRAD_SCALE_ON_DEVICE=scale_on_device,
            HAS_FOUND_INF=found_inf is not None,
            COMPUTE=tl.float64 if param.dtype == torch.float64 else tl.float32,
        ),
    )
