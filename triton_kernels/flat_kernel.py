"""The step over one range per list (flattened buffers: each list's tensors back to back in one
storage), for counts read on the host: program i takes elements [i * BLOCK, (i + 1) * BLOCK)."""

from __future__ import annotations

import triton
import triton.language as tl

from .element_update import update_block
from .kernel_scalars import KernelScalars
from .launch_rule import COMPILE_OPTIONS
from .tensor_lists import TensorLists


# The count and switch_step change from step to step: compiling a variant for the values Triton
# would otherwise specialize on (1, multiples of 16) buys nothing.
@triton.jit(do_not_specialize=["count", "switch_step"])
def tmsgd_flat_kernel(
    param_ptr, grad_ptr, d1_ptr, d2_ptr, momentum_ptr, numel, count,
    lr: tl.float64, lr_tensor_ptr, grad_scale: tl.float64, grad_scale_ptr, found_inf_ptr,
    b1: tl.float64, b2: tl.float64, momentum: tl.float64, gain: tl.float64,
    weight_decay: tl.float64, switch_step,
    HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr, LR_ON_DEVICE: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
    GRAD_SCALE_ON_DEVICE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # int64 offsets: a flat buffer may hold more than 2**31 elements.
    start = tl.program_id(0).to(tl.int64) * BLOCK
    update_block(
        param_ptr + start, grad_ptr + start, d1_ptr + start, d2_ptr + start,
        momentum_ptr + start, numel - start, count,
        lr, lr_tensor_ptr, grad_scale, grad_scale_ptr, found_inf_ptr, b1, b2, momentum, gain,
        weight_decay, switch_step, HAS_MOMENTUM, NESTEROV, MAXIMIZE, HAS_WEIGHT_DECAY,
        LR_ON_DEVICE, HAS_GRAD_SCALE, GRAD_SCALE_ON_DEVICE, HAS_FOUND_INF, COMPUTE, BLOCK,
    )


def launch_flat(lists: TensorLists, first: int, numel: int, block: int, warps: int, count: int,
                args: KernelScalars) -> None:
    """Step `numel` elements from tensor `first` of every list (the first non-empty one) for
    tensors that have taken `count` steps (or any count of the same class)."""
    even, odd = lists.delta_even[first], lists.delta_odd[first]
    # A count k reads d2 from slot k % 2 and writes d_new there; d1 is the other slot.
    d1, d2 = (even, odd) if count % 2 else (odd, even)
    param = lists.params[first]
    momentum = lists.momentum_buffers[first] if lists.momentum_buffers else param
    tmsgd_flat_kernel[(triton.cdiv(numel, block),)](
        param, lists.grads[first], d1, d2, momentum, numel, count, *args.values, **args.flags,
        BLOCK=block, num_warps=warps, **COMPILE_OPTIONS,
    )
