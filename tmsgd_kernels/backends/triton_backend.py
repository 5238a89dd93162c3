"""Triton backend: the fused step of triton_kernels/ (one launch per bucket plus a one-program
step-counter launch), behind the custom op `tmsgd_triton::step_bucket`.

This module imports without Triton; the kernels are imported on the first step, after
`unavailable_reason` has said they can run. Math runs in fp32 for fp16/bf16/fp32 params and in
fp64 for fp64 params (the hyperparameters reach the kernel as fp64 scalars).
"""

from __future__ import annotations

import os
import sys

import torch

from ..step_options import StepOptions

name = "triton"

_INSTALL = (
    f"install the Triton release that matches torch {torch.__version__} "
    "(for example `pip install tmsgd-kernels[triton]`, or the `triton` version torch pins)"
)


def _interpreting() -> bool:
    """Whether the kernels run under Triton's interpreter. Triton decides when a kernel is
    defined, so once they are imported their own kind counts, not the environment now."""
    defined = sys.modules.get("tmsgd_kernels.triton_kernels.step_count")
    if defined is not None:
        return type(defined.advance_step_kernel).__name__ == "InterpretedFunction"
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


def _op():
    from tmsgd_kernels.triton_kernels import op  # noqa: F401  (registers the custom op)

    return torch.ops.tmsgd_triton.step_bucket


def step_bucket(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    history: torch.Tensor,
    momentum_buffer: torch.Tensor | None,
    step: torch.Tensor,
    options: StepOptions,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
) -> None:
    _op()(params, grads, history, momentum_buffer, step, *options.op_arguments(), grad_scale,
          found_inf)
