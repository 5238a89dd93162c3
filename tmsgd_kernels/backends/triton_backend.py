"""Triton backend: the fused step of triton_kernels/, behind the op
tmsgd_kernels::tmsgd_step_triton (schema and contract: tmsgd_kernels/ops.py).

This module imports without Triton; the kernels are imported (and registered as the op's
implementation) on the first step, after `unavailable_reason` has said they can run. Math runs
in fp32 for fp16/bf16/fp32 params and in fp64 for fp64 params (the hyperparameters reach the
kernels as fp64 scalars).
"""

from __future__ import annotations

import os
import sys

import torch

from .. import ops
from ..step_scalars import StepScalars

name = "triton"

_INSTALL = (
    f"install the Triton release that matches torch {torch.__version__} "
    "(for example `pip install tmsgd-kernels[triton]`, or the `triton` version torch pins)"
)
_KERNELS = "tmsgd_kernels.triton_kernels.op"


def _interpreting() -> bool:
    """Whether the kernels run under Triton's interpreter. Triton decides when a kernel is
    defined, so once they are imported their own kind counts, not the environment now."""
    defined = sys.modules.get("tmsgd_kernels.triton_kernels.count_kernel")
    if defined is not None:
        return type(defined.advance_counts_kernel).__name__ == "InterpretedFunction"
    return os.environ.get("TRITON_INTERPRET") == "1"


def unavailable_reason(device: torch.device) -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as error:
        if error.name == "triton":
            return f"Triton is not installed: {_INSTALL}"
        return f"Triton failed to import ({error}): {_INSTALL}"
    except Exception as error:  # a broken or mismatched install
        return f"Triton failed to import ({error}): {_INSTALL}"
    if device.type == "cuda":
        if _interpreting():
            return ("TRITON_INTERPRET=1 is set, so Triton interprets kernels on the host, where "
                    "CUDA tensors' addresses cannot be read; unset it to run compiled on the GPU")
        if not torch.cuda.is_available():
            return "no CUDA GPU is available to this process"
        return None
    if device.type == "cpu":
        if _interpreting():
            return None
        return ("Triton compiles for GPUs; it runs on CPU tensors only under its interpreter: "
                "set TRITON_INTERPRET=1 in the environment before the first Triton step "
                "(slow, meant for testing)")
    return f"Triton runs on CUDA devices (and on CPU under TRITON_INTERPRET=1), not {device.type}"


_op = None  # the op's overload, looked up once: host time matters at every step


def op():
    """The op tmsgd_kernels::tmsgd_step_triton, its Triton kernels registered."""
    global _op
    if _op is None:
        __import__(_KERNELS)  # registers the implementation
        _op = getattr(getattr(torch.ops, ops.NAMESPACE), ops.TRITON_OP).default
    return _op


def load() -> None:
    """Import and register the kernels (backends.resolve calls it once the backend can run)."""
    op()


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
    (_op or op())(params, grads, delta_even, delta_odd, momentum_buffers, steps,
                  *scalars.op_arguments(), grad_scale, found_inf)
