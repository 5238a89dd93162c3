"""Block size and warps by a rule. No autotuner: the kernel updates params, history, momentum
and step in place, and an autotuner re-runs it per config, which would apply the step twice.

On a GPU the step is a bandwidth-bound stream (24 bytes per fp32 element, no reuse). What sets
a config's cost is the elements each thread holds, BLOCK / (32 * num_warps): the registers grow
with it. Measured with ptxas (Triton ahead of time for sm_90, cuobjdump of the cubin; fp32 params
and history): 16 elements per thread (BLOCK 4096 with 8 warps, the earlier rule for large
ranges) took 144 registers without momentum and 206 with it (Triton 3.7.1), one or two CTAs of
256 threads per SM; 8 elements per thread (2048 / 8 and 1024 / 4) take 48 and 48-60 (Triton
3.6.0 to 3.9.0), with four 16-byte vectors per fp32 stream and thread in flight. Both rules
below hold 8 elements per thread; tests/test_triton_codegen.py keeps their register counts and
vector widths for every Triton release CI runs.
Larger blocks for large ranges only mean fewer programs; small blocks for lists of small tensors
keep the masked-off tail of each tensor's last block short. Time on a GPU: bench/gpu_check.

Under TRITON_INTERPRET=1 (CPU tensors) every program costs milliseconds of Python overhead
while numpy work per element is cheap: one large block per tensor is fastest. Measured on the
2-core development machine (busy): 1600 elements in 100 programs of 16 took 360 ms a step, in
one program 7 ms; 65536 elements in one block 24 ms.
"""

from __future__ import annotations

import torch
import triton

INTERPRETER_MAX_BLOCK = 1 << 16
GPU_LARGE_RANGE = 1 << 20
LARGE = (2048, 8)
SMALL = (1024, 4)

# Compile options every step kernel gets. No fused multiply-add: the C++ and CUDA kernels are
# built without contraction (-ffp-contract=off, nvcc --fmad=false), and Triton's default
# (fusion on; measured 48-64 fma.rn per kernel at 8 elements per thread) would round
# `b1 * d1 + b2 * d2 - lr * u` differently from them. Triton 3.10 changes the default, so it is
# stated here rather than inherited. The interpreter ignores it.
COMPILE_OPTIONS = {"enable_fp_fusion": False}


def _interpreter_block(numel: int, smallest: int) -> int:
    return min(max(triton.next_power_of_2(numel), 16, smallest), INTERPRETER_MAX_BLOCK)


def flat_config(numel: int, device: torch.device, smallest: int = 1) -> tuple[int, int]:
    """(BLOCK, num_warps) for one contiguous range of `numel` elements; BLOCK at least
    `smallest` (a power of two: an 8-bit history's block), which every GPU block is."""
    if device.type != "cuda":
        return _interpreter_block(numel, smallest), 1
    return LARGE if numel >= GPU_LARGE_RANGE else SMALL


def table_config(numels: list[int], device: torch.device, smallest: int = 1
                 ) -> tuple[int, int]:
    """(BLOCK, num_warps) for a list of tensors stepped through the pointer table; `smallest`
    as for flat_config."""
    largest = max(numels)
    if device.type != "cuda":
        return _interpreter_block(largest, smallest), 1
    return LARGE if sum(numels) / len(numels) >= GPU_LARGE_RANGE else SMALL
