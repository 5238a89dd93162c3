"""The step of both native backends (`cpu`, `cuda`): one call of the op tmsgd_kernels::tmsgd_step;
the dispatcher picks the CPU or the CUDA kernel from the params' device."""

from __future__ import annotations

import torch

from .. import native_extension, ops
from ..step_scalars import StepScalars

_OP = getattr(getattr(torch.ops, ops.NAMESPACE), ops.NATIVE_OP).default


def step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    delta_even: list[torch.Tensor],
    delta_odd: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    steps: list[torch.Tensor],
    scalars: StepScalars,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
) -> None:
    _OP(params, grads, delta_even, delta_odd, momentum_buffers, steps, *scalars.op_arguments(),
        grad_scale, found_inf)


def unavailable_reason(dispatch_key: str) -> str | None:
    """Why the extension cannot run the op for `dispatch_key` (CPU, CUDA), or None."""
    if native_extension.load_error is not None:
        return native_extension.load_error
    if not native_extension.has_kernel(dispatch_key):
        if dispatch_key == "CUDA":
            return ("the extension was built without CUDA; rebuild it with a CUDA build of torch "
                    "and a CUDA toolkit (CUDA_HOME set, nvcc on it): "
                    "`pip install --no-build-isolation .`")
        return (f"the loaded extension has no {dispatch_key} implementation of "
                f"{native_extension.OP_NAME}; {native_extension.BUILD_HINT}")
    return None
