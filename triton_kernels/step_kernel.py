"""The step kernel and its two launches. Program b steps one block of one tensor, found in one
of two ways (the constexpr TABLE picks, so each compiled variant holds only its own):

flat    one range per list (flattened buffers: each list's tensors back to back in memory), for
        counts read on the host: program b takes elements [b * BLOCK, (b + 1) * BLOCK) from the
        pointers it is given, with the count of their class.
table   any list of tensors, in one launch (two when some tensors are not aligned): program b
        reads from the pointer table (pointer_table.py) which tensor and which block of it to
        step, the tensor's addresses and, with the counts on the device, its count.

With an 8-bit history (HISTORY_DTYPE int8) a program's BLOCK elements are BLOCK // 256 of the
history's blocks (quantized_update.py): flat ranges are of tensors whose rows are whole blocks
(layout.py), so block q of the range is elements [256 q, 256 q + 256) with scale q; through the
table, the aligned tensors' blocks are addressed so too, the others row by row. An 8-bit
momentum buffer (MOMENTUM_CODES, only with an 8-bit history) is int8 codes with scales laid out
like the history's, read and written in the same blocks.

The arguments a variant does not use get stand-ins (a tensor, 0) it never reads.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import pointer_table as pt
from .element_update import update_block
from .kernel_scalars import KernelScalars
from .launch_rule import COMPILE_OPTIONS
from .quantized_update import SCALE_BLOCK, update_quantized_blocks
from .tensor_lists import TensorLists

ROW = tl.constexpr(pt.ROW)
PARAM = tl.constexpr(pt.PARAM)
GRAD = tl.constexpr(pt.GRAD)
DELTA_EVEN = tl.constexpr(pt.DELTA_EVEN)
DELTA_ODD = tl.constexpr(pt.DELTA_ODD)
MOMENTUM = tl.constexpr(pt.MOMENTUM)
STEP = tl.constexpr(pt.STEP)
NUMEL = tl.constexpr(pt.NUMEL)
ROW_LENGTH = tl.constexpr(pt.ROW_LENGTH)
EVEN_SCALES = tl.constexpr(pt.EVEN_SCALES)
ODD_SCALES = tl.constexpr(pt.ODD_SCALES)
BLOCKS = tl.constexpr(pt.BLOCKS)
MOMENTUM_SCALES = tl.constexpr(pt.MOMENTUM_SCALES)

TRITON_DTYPES = {
    torch.float64: tl.float64,
    torch.float32: tl.float32,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
    torch.int8: tl.int8,
}


@triton.jit
def _address(row, field, DTYPE: tl.constexpr, ALIGNED: tl.constexpr):
    ptr = tl.load(row + field).to(tl.pointer_type(DTYPE))
    if ALIGNED:
        ptr = tl.multiple_of(ptr, 16)
    return ptr


# The count, switch_step and map_start change from step to step or launch to launch: compiling
# a variant for the values Triton would otherwise specialize on (1, multiples of 16) buys nothing.
@triton.jit(do_not_specialize=["map_start", "count", "switch_step"])
def tmsgd_step_kernel(
    table_ptr, map_start, param_ptr, grad_ptr, d1_ptr, d2_ptr, s1_ptr, s2_ptr, momentum_ptr,
    momentum_scales_ptr, numel, count,
    lr: tl.float64, lr_tensor_ptr, grad_scale: tl.float64, grad_scale_ptr, found_inf_ptr,
    b1: tl.float64, b2: tl.float64, momentum: tl.float64, gain: tl.float64,
    weight_decay: tl.float64, switch_step,
    HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr, LR_ON_DEVICE: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
    GRAD_SCALE_ON_DEVICE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr, TABLE: tl.constexpr, PARAM_DTYPE: tl.constexpr,
    HISTORY_DTYPE: tl.constexpr, COUNTS_ON_DEVICE: tl.constexpr, ALIGNED: tl.constexpr,
    MOMENTUM_CODES: tl.constexpr,
):
    if TABLE:
        # map_start: where this launch's part of the block map begins.
        entry = table_ptr + map_start + 2 * tl.program_id(0)
        index = tl.load(entry)
        start = tl.multiple_of(tl.load(entry + 1), BLOCK)
        row = table_ptr + ROW * index
        if COUNTS_ON_DEVICE:
            # Each tensor's own count (an argument otherwise: one class of counts per launch).
            count = tl.load(tl.load(row + STEP).to(tl.pointer_type(tl.int64)))
        # A count k reads d2 from slot k % 2 and writes d_new there; d1 is the other slot. The
        # choice is made between addresses, before they become pointers.
        odd = count % 2 != 0
        even_address = tl.load(row + DELTA_EVEN)
        odd_address = tl.load(row + DELTA_ODD)
        d1_ptr = tl.where(odd, even_address, odd_address).to(tl.pointer_type(HISTORY_DTYPE))
        d2_ptr = tl.where(odd, odd_address, even_address).to(tl.pointer_type(HISTORY_DTYPE))
        param_ptr = _address(row, PARAM, PARAM_DTYPE, ALIGNED)
        grad_ptr = _address(row, GRAD, PARAM_DTYPE, ALIGNED)
        momentum_ptr = param_ptr
        if MOMENTUM_CODES:
            momentum_ptr = _address(row, MOMENTUM, tl.int8, ALIGNED)
            momentum_scales_ptr = tl.load(row + MOMENTUM_SCALES).to(tl.pointer_type(tl.float32))
        elif HAS_MOMENTUM:
            momentum_ptr = _address(row, MOMENTUM, PARAM_DTYPE, ALIGNED)
        if ALIGNED:
            d1_ptr = tl.multiple_of(d1_ptr, 16)
            d2_ptr = tl.multiple_of(d2_ptr, 16)
        numel = tl.load(row + NUMEL)
        if HISTORY_DTYPE == tl.int8:
            even_scales = tl.load(row + EVEN_SCALES)
            odd_scales = tl.load(row + ODD_SCALES)
            s1_ptr = tl.where(odd, even_scales, odd_scales).to(tl.pointer_type(tl.float32))
            s2_ptr = tl.where(odd, odd_scales, even_scales).to(tl.pointer_type(tl.float32))
            row_length = tl.load(row + ROW_LENGTH)
            blocks = tl.load(row + BLOCKS)
    else:
        # int64 offsets: a flat buffer may hold more than 2**31 elements.
        start = tl.program_id(0).to(tl.int64) * BLOCK
        # A flat range with an 8-bit history: every block full (the row length is not read).
        row_length = numel
        blocks = numel // SCALE_BLOCK
    if HISTORY_DTYPE == tl.int8:
        update_quantized_blocks(
            param_ptr, grad_ptr, d1_ptr, d2_ptr, s1_ptr, s2_ptr, momentum_ptr,
            momentum_scales_ptr, start // SCALE_BLOCK, blocks, row_length, count,
            lr, lr_tensor_ptr, grad_scale, grad_scale_ptr, found_inf_ptr, b1, b2, momentum, gain,
            weight_decay, switch_step, HAS_MOMENTUM, NESTEROV, MAXIMIZE, HAS_WEIGHT_DECAY,
            LR_ON_DEVICE, HAS_GRAD_SCALE, GRAD_SCALE_ON_DEVICE, HAS_FOUND_INF, BLOCK,
            TABLE and not ALIGNED, MOMENTUM_CODES,
        )
    else:
        update_block(
            param_ptr + start, grad_ptr + start, d1_ptr + start, d2_ptr + start,
            momentum_ptr + start, numel - start, count,
            lr, lr_tensor_ptr, grad_scale, grad_scale_ptr, found_inf_ptr, b1, b2, momentum, gain,
            weight_decay, switch_step, HAS_MOMENTUM, NESTEROV, MAXIMIZE, HAS_WEIGHT_DECAY,
            LR_ON_DEVICE, HAS_GRAD_SCALE, GRAD_SCALE_ON_DEVICE, HAS_FOUND_INF, COMPUTE, BLOCK,
        )


def _dtypes(lists: TensorLists) -> dict:
    return dict(PARAM_DTYPE=TRITON_DTYPES[lists.params[0].dtype],
                HISTORY_DTYPE=TRITON_DTYPES[lists.delta_even[0].dtype],
                MOMENTUM_CODES=bool(lists.momentum_scales))


def launch_flat(lists: TensorLists, first: int, numel: int, block: int, warps: int, count: int,
                args: KernelScalars) -> None:
    """Step `numel` elements from tensor `first` of every list (the first non-empty one) for
    tensors that have taken `count` steps (or any count of the same class); with an 8-bit
    history, their scales (and an 8-bit buffer's) from the first tensor's on."""
    even, odd = lists.delta_even[first], lists.delta_odd[first]
    param = lists.params[first]
    even_scales, odd_scales = param, param
    if lists.delta_even_scales:
        even_scales, odd_scales = lists.delta_even_scales[first], lists.delta_odd_scales[first]
    # A count k reads d2 from slot k % 2 and writes d_new there; d1 is the other slot.
    d1, d2, s1, s2 = ((even, odd, even_scales, odd_scales) if count % 2
                      else (odd, even, odd_scales, even_scales))
    momentum = lists.momentum_buffers[first] if lists.momentum_buffers else param
    momentum_scales = lists.momentum_scales[first] if lists.momentum_scales else param
    tmsgd_step_kernel[(triton.cdiv(numel, block),)](
        param, 0, param, lists.grads[first], d1, d2, s1, s2, momentum, momentum_scales, numel,
        count, *args.values,
        **args.flags, BLOCK=block, TABLE=False, **_dtypes(lists), COUNTS_ON_DEVICE=False,
        ALIGNED=False, num_warps=warps, **COMPILE_OPTIONS,
    )


def launch_table(table: pt.PointerTable, lists: TensorLists, block: int, warps: int, count: int,
                 counts_on_device: bool, args: KernelScalars) -> None:
    """Step every tensor of `lists` through `table`: with the counts read by each program from
    the device, or for tensors that have all taken `count` steps (or counts of its class). One
    launch for the blocks of aligned tensors, with the alignment hint, one for the others."""
    map_start = pt.ROW * table.tensors
    stand_in = table.table
    for programs, aligned in ((table.aligned_blocks, True),
                              (table.blocks - table.aligned_blocks, False)):
        if programs:
            tmsgd_step_kernel[(programs,)](
                table.table, map_start, stand_in, stand_in, stand_in, stand_in, stand_in,
                stand_in, stand_in, stand_in, 0, count, *args.values, **args.flags, BLOCK=block,
                TABLE=True, **_dtypes(lists), COUNTS_ON_DEVICE=counts_on_device, ALIGNED=aligned,
                num_warps=warps, **COMPILE_OPTIONS,
            )
        map_start += 2 * programs
