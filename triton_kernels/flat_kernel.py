"""The step over one contiguous range (one tensor, or a bucket whose params and grads each lie
back to back in one storage): program i takes elements [i * BLOCK, (i + 1) * BLOCK)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .element_update import update_block
from .launch_rule import flat_config
from .step_args import StepArgs


@triton.jit
def tmsgd_flat_kernel(
    param_ptr, grad_ptr, history_ptr, history_stride, momentum_ptr, numel,
    step_ptr, lr: tl.float64, lr_ptr, grad_scale_ptr, found_inf_ptr,
    b1: tl.float64, b2: tl.float64, momentum: tl.float64, gain: tl.float64,
    weight_decay: tl.float64, switch_step,
    HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr, LR_ON_DEVICE: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
    HAS_FOUND_INF: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
    HISTORY_ALIGN: tl.constexpr,
):
    # int64 offsets: a flat bucket may hold more than 2**31 elements.
    start = tl.program_id(0).to(tl.int64) * BLOCK
    update_block(
        param_ptr + start, grad_ptr + start, history_ptr + start, history_stride,
        momentum_ptr + start, numel - start,
        step_ptr, lr, lr_ptr, grad_scale_ptr, found_inf_ptr,
        b1, b2, momentum, gain, weight_decay, switch_step,
        HAS_MOMENTUM, NESTEROV, MAXIMIZE, HAS_WEIGHT_DECAY, LR_ON_DEVICE, HAS_GRAD_SCALE,
        HAS_FOUND_INF, COMPUTE, BLOCK, HISTORY_ALIGN,
    )


def launch_flat(param: torch.Tensor, grad: torch.Tensor, args: StepArgs) -> None:
    """Step the 1-D contiguous `param` (history and momentum columns from 0) in one launch."""
    numel = param.numel()
    if numel == 0:
        return
    block, warps = flat_config(numel, param.device)
    grid = (triton.cdiv(numel, block),)
    tmsgd_flat_kernel[grid](
        param, grad, args.history, args.history.stride(0), args.momentum_or(param), numel,
        *args.scalar_args(), **args.flags(), BLOCK=block, num_warps=warps,
    )
