"""Advancing the counts on the device, in a launch of its own after the update kernel.

Every program of the update kernel reads its tensor's count (it picks the history slot, the first
momentum step and the warm-up), and a tensor's blocks run in different programs. Had one of them
written count + 1, a program scheduled later could read the new value and step its block with
the wrong slot. Kernels launched on one CUDA stream run in order, so this launch starts only after
every update program has finished: correct by construction, for one small launch per call.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import pointer_table as pt

ROW = tl.constexpr(pt.ROW)
STEP = tl.constexpr(pt.STEP)
BLOCK = 1024


@triton.jit
def advance_counts_kernel(table_ptr, tensors, found_inf_ptr, HAS_FOUND_INF: tl.constexpr,
                          BLOCK: tl.constexpr):
    if HAS_FOUND_INF:
        # A skipped step advances no count: every lane is masked off.
        tensors = tl.where(tl.load(found_inf_ptr) == 0, tensors, 0)
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = index < tensors
    addresses = tl.load(table_ptr + ROW * index + STEP, mask=mask, other=0)
    counts = addresses.to(tl.pointer_type(tl.int64))
    tl.store(counts, tl.load(counts, mask=mask) + 1, mask=mask)


def launch_advance_counts(table: pt.PointerTable, found_inf: torch.Tensor | None) -> None:
    """Every count of the table += 1, unless found_inf is given and non-zero."""
    advance_counts_kernel[(triton.cdiv(table.tensors, BLOCK),)](
        table.table, table.tensors, table.table if found_inf is None else found_inf,
        HAS_FOUND_INF=found_inf is not None, BLOCK=BLOCK, num_warps=4,
    )
