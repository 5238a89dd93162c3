"""Advancing the step counter, in its own one-program launch after the update kernel.

Every program of the update kernel reads `step` (it picks the history slot, the first momentum
step and the warm-up). If any of them wrote step + 1, a program scheduled later on a real GPU
could read the new value and step its block with the wrong slot. Kernels launched on one CUDA
stream run in order, so this launch starts only after every update program has finished:
correct by construction, for the cost of one tiny launch per bucket, and needing no counter
buffer that would have to be allocated and reset per step (the alternative, a last-program
atomic counter, needs both and acquire/release ordering to be right).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def advance_step_kernel(step_ptr, found_inf_ptr, HAS_FOUND_INF: tl.constexpr):
    step = tl.load(step_ptr)
    if HAS_FOUND_INF:
        step += (tl.load(found_inf_ptr) == 0).to(tl.int64)
    else:
        step += 1
    tl.store(step_ptr, step)


def launch_advance_step(step: torch.Tensor, found_inf: torch.Tensor | None) -> None:
    """step += 1, unless found_inf is given and non-zero (then step is unchanged)."""
    advance_step_kernel[(1,)](
        step, step if found_inf is None else found_inf, HAS_FOUND_INF=found_inf is not None,
        num_warps=1,
    )
