"""The TM-SGD step of one block of elements, shared by the flat and the table kernel.

The caller passes pointers already advanced to the block's first element and `count`, the
number of valid elements from there. Everything step-dependent (which history slot is d1, the
first momentum step, the warm-up) is derived from `step` read on the device, so no launch needs
a host synchronization.
"""

import triton
import triton.language as tl


@triton.jit
def widen(x, COMPUTE: tl.constexpr):
    # bf16 <-> fp64 goes through fp32 (exact on the way in; on the way out the rounding torch's
    # own double -> bfloat16 conversion does): the interpreter has no direct bf16 <-> fp64 cast.
    if x.dtype == tl.bfloat16:
        x = x.to(tl.float32)
    return x.to(COMPUTE)


@triton.jit
def narrow(x, DTYPE: tl.constexpr):
    if DTYPE == tl.bfloat16:
        x = x.to(tl.float32)
    return x.to(DTYPE)


@triton.jit
def update_block(
    param_ptr, grad_ptr, history_ptr, history_stride, momentum_ptr, count,
    step_ptr, lr, lr_ptr, grad_scale_ptr, found_inf_ptr,
    b1, b2, momentum, gain, weight_decay, switch_step,
    HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr, LR_ON_DEVICE: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
    HAS_FOUND_INF: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
):
    if HAS_FOUND_INF:
        # A skipped step masks every load and store: nothing is read, nothing changes.
        count = tl.where(tl.load(found_inf_ptr) == 0, count, 0)
    offsets = tl.arange(0, BLOCK)
    mask = offsets < count
    step = tl.load(step_ptr)
    multistep = step >= switch_step
    # After s completed steps slot s % 2 holds d2 (and receives d_new), slot (s + 1) % 2 holds d1.
    parity = step % 2
    d2_ptr = history_ptr + parity * history_stride
    d1_ptr = history_ptr + (1 - parity) * history_stride

    # Hyperparameters arrive as Python floats (fp64 scalars when compiled, see the kernels'
    # annotations): tl.full turns them into COMPUTE scalars without a detour through fp32.
    if LR_ON_DEVICE:
        lr_c = widen(tl.load(lr_ptr), COMPUTE)
    else:
        lr_c = tl.full([], lr, COMPUTE)

    g = widen(tl.load(grad_ptr + offsets, mask=mask, other=0), COMPUTE)
    if HAS_GRAD_SCALE:
        g = g / widen(tl.load(grad_scale_ptr), COMPUTE)
    if MAXIMIZE:
        g = -g
    w = widen(tl.load(param_ptr + offsets, mask=mask, other=0), COMPUTE)
    if HAS_WEIGHT_DECAY:
        g = g + tl.full([], weight_decay, COMPUTE) * w

    u = g
    if HAS_MOMENTUM:
        buf = widen(tl.load(momentum_ptr + offsets, mask=mask, other=0), COMPUTE)
        # torch.optim.SGD's rule: the first step takes the gradient as the buffer.
        buf = tl.where(
            step == 0, g, tl.full([], momentum, COMPUTE) * buf + tl.full([], gain, COMPUTE) * g
        )
        tl.store(momentum_ptr + offsets, narrow(buf, momentum_ptr.dtype.element_ty), mask=mask)
        if NESTEROV:
            u = g + tl.full([], momentum, COMPUTE) * buf
        else:
            u = buf

    # During the warm-up the history is not read at all: the masked loads give 0, so
    # d_new = -lr * u, the plain SGD step.
    history_mask = mask & multistep
    d1 = widen(tl.load(d1_ptr + offsets, mask=history_mask, other=0), COMPUTE)
    d2 = widen(tl.load(d2_ptr + offsets, mask=history_mask, other=0), COMPUTE)
    d_new = (tl.full([], b1, COMPUTE) * d1 + tl.full([], b2, COMPUTE) * d2) - lr_c * u

    tl.store(d2_ptr + offsets, narrow(d_new, d2_ptr.dtype.element_ty), mask=mask)
    tl.store(param_ptr + offsets, narrow(w + d_new, param_ptr.dtype.element_ty), mask=mask)
