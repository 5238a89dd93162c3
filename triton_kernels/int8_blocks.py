"""Where an 8-bit history's blocks lie (tmsgd_kernels/int8_history.py, the reference encoder):
one fp32 scale per block of SCALE_BLOCK consecutive elements of memory within a row (a dim-0
slice, contiguous for every param with an 8-bit history); the last block of a row may be short.

Host side only (no Triton): the checks, the layout and the pointer table use it, the kernel
(quantized_update.py) gets the numbers it computes.
"""

from __future__ import annotations

import math

import torch

# int8_history.BLOCK, the reference encoder's block (tests/test_triton_int8.py checks they agree;
# that module is not imported here: triton_kernels imports only the package's contract module).
SCALE_BLOCK = 256


def row_length(param: torch.Tensor) -> int:
    """Elements per row (dim-0 slice) of a param of one dimension or more."""
    return math.prod(param.shape[1:])


def scales_shape(param: torch.Tensor) -> tuple[int, int]:
    """The shape of a slot's scales: one per block, (rows, blocks per row)."""
    return param.shape[0], -(-row_length(param) // SCALE_BLOCK)


def blocks(param: torch.Tensor) -> int:
    """Blocks of the whole param (its scales' numel)."""
    rows, per_row = scales_shape(param)
    return rows * per_row


def rows_of_whole_blocks(param: torch.Tensor) -> bool:
    """Whether every block is full: the blocks are then SCALE_BLOCK consecutive elements from
    every multiple of SCALE_BLOCK, one range, which the kernel addresses as such."""
    return row_length(param) % SCALE_BLOCK == 0
