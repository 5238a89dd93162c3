"""Block size and warps by a rule. No autotuner: the kernel updates params, history, momentum
and step in place, and an autotuner re-runs it per config, which would apply the step twice.

On a GPU the step is a bandwidth-bound stream (24 bytes per fp32 element, no reuse): big blocks
for big ranges keep enough bytes in flight per program; small blocks for lists of small tensors
keep the masked-off tail of each tensor's last block short. These GPU numbers follow common
practice for Triton elementwise kernels and have NOT been measured here (no GPU was available);
bench/bench_triton.py is the script to check them.

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


def flat_config(numel: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK, num_warps) for one contiguous range of `numel` elements."""
    if device.type != "cuda":
        return min(max(triton.next_power_of_2(numel), 16), INTERPRETER_MAX_BLOCK), 1
    if numel >= GPU_LARGE_RANGE:
        return 4096, 8
    return 1024, 4


def table_config(numels: list[int], device: torch.device) -> tuple[int, int]:
    """(BLOCK, num_warps) for a list of tensors stepped through the pointer table."""
    largest = max(numels)
    if device.type != "cuda":
        return min(max(triton.next_power_of_2(largest), 16), INTERPRETER_MAX_BLOCK), 1
    mean = sum(numels) / len(numels)
    if mean >= GPU_LARGE_RANGE:
        return 4096, 8
    return 1024, 4
