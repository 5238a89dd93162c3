"""The step over a list of tensors in one launch: program b reads which tensor and which block of
it to step from the pointer table (see pointer_table.py)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from . import pointer_table
from .element_update import update_block
from .launch_rule import table_config
from .step_args import StepArgs

# With ALIGNED, every param and grad address is a multiple of 16 bytes and every first history
# column a multiple of ALIGN_ELEMENTS (8: 16 bytes of fp16/bf16, more for wider dtypes), which
# holds for the usual model shapes (sizes that are multiples of 8).
ALIGN_ELEMENTS = tl.constexpr(pointer_table.ALIGN_ELEMENTS)

_TRITON_DTYPES = {
    torch.float64: tl.float64,
    torch.float32: tl.float32,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
}


@triton.jit
def tmsgd_table_kernel(
    table_ptr, tensors, blocks, history_ptr, history_stride, momentum_ptr,
    step_ptr, lr: tl.float64, lr_ptr, grad_scale_ptr, found_inf_ptr,
    b1: tl.float64, b2: tl.float64, momentum: tl.float64, gain: tl.float64,
    weight_decay: tl.float64, switch_step,
    HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr, LR_ON_DEVICE: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
    HAS_FOUND_INF: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
    HISTORY_ALIGN: tl.constexpr,
    PARAM_DTYPE: tl.constexpr, ALIGNED: tl.constexpr,
):
    block = tl.program_id(0)
    index = tl.load(table_ptr + 4 * tensors + block)
    start = tl.multiple_of(tl.load(table_ptr + 4 * tensors + blocks + block), BLOCK)
    param_ptr = tl.load(table_ptr + index).to(tl.pointer_type(PARAM_DTYPE))
    grad_ptr = tl.load(table_ptr + tensors + index).to(tl.pointer_type(PARAM_DTYPE))
    column = tl.load(table_ptr + 2 * tensors + index)
    if ALIGNED:
        # Addresses read from memory carry no alignment facts; without these hints the compiler
        # cannot use 16-byte vector loads (checked in the PTX by tests/test_triton_codegen.py).
        param_ptr = tl.multiple_of(param_ptr, 16)
        grad_ptr = tl.multiple_of(grad_ptr, 16)
        column = tl.multiple_of(column, ALIGN_ELEMENTS)
    column += start
    numel = tl.load(table_ptr + 3 * tensors + index)
    update_block(
        param_ptr + start, grad_ptr + start, history_ptr + column, history_stride,
        momentum_ptr + column, numel - start,
        step_ptr, lr, lr_ptr, grad_scale_ptr, found_inf_ptr,
        b1, b2, momentum, gain, weight_decay, switch_step,
        HAS_MOMENTUM, NESTEROV, MAXIMIZE, HAS_WEIGHT_DECAY, LR_ON_DEVICE, HAS_GRAD_SCALE,
        HAS_FOUND_INF, COMPUTE, BLOCK, HISTORY_ALIGN,
    )


def launch_table(
    params: list[torch.Tensor], grads: list[torch.Tensor], numels: list[int], args: StepArgs,
    check: Callable[[list[torch.Tensor], list[torch.Tensor]], None],
) -> None:
    """Step every tensor of `params` (history and momentum columns in list order, `numels` their
    sizes) in one launch; `check(params, grads)` runs whenever a pointer table is built."""
    if sum(numels) == 0:
        return
    block, warps = table_config(numels, params[0].device)
    table = pointer_table.pointer_table(params, grads, numels, block, check)
    tmsgd_table_kernel[(table.blocks,)](
        table.table, table.tensors, table.blocks, args.history, args.history.stride(0),
        args.momentum_or(params[0]), *args.scalar_args(), **args.flags(),
        BLOCK=block, PARAM_DTYPE=_TRITON_DTYPES[params[0].dtype], ALIGNED=table.aligned,
        num_warps=warps,
    )
