"""The TM-SGD step of one block of elements, shared by the flat and the table kernel, and the
parts of it the 8-bit history's step (quantized_update.py) shares.

The caller passes pointers already advanced to the block's first element, `n`, the number of
valid elements from there, d1 and d2 already picked by the count's parity, and the count itself:
the first momentum step and the warm-up follow from it.
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
def load_as(ptrs, mask, COMPUTE: tl.constexpr, FULL: tl.constexpr):
    if FULL:
        x = tl.load(ptrs)
    else:
        x = tl.load(ptrs, mask=mask, other=0)
    return widen(x, COMPUTE)


@triton.jit
def store_as(ptrs, x, mask, FULL: tl.constexpr):
    """Store x rounded to the pointers' element type, 16-bit types by way of fp32: torch (and the
    CUDA kernel, through c10::Half / c10::BFloat16) convert fp64 to them that way, and a direct
    rounding differs from the double one for roughly one value in 2**14."""
    if ptrs.dtype.element_ty == tl.bfloat16 or ptrs.dtype.element_ty == tl.float16:
        x = x.to(tl.float32)
    if FULL:
        tl.store(ptrs, x.to(ptrs.dtype.element_ty))
    else:
        tl.store(ptrs, x.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def direction(
    param_ptrs, grad_ptrs, momentum_ptrs, mask, later, grad_scale, momentum, gain, weight_decay,
    HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr, COMPUTE: tl.constexpr,
    FULL: tl.constexpr,
):
    """The param w and the direction u of its update (torch.optim.SGD's, momentum included: the
    buffer is stored here), in COMPUTE. FULL blocks need no mask, so their loads and stores can be
    vectorized (a mask `offsets < n` with an arbitrary n defeats that; a mask that is one value
    for the whole block, as `later`, does not)."""
    g = load_as(grad_ptrs, mask, COMPUTE, FULL)
    if HAS_GRAD_SCALE:
        # Correctly rounded, as in the C++ and CUDA kernels: Triton's fp32 `/` is div.full.f32
        # (approximate, up to 2 ulp; PTX of Triton 3.6.0 and 3.7.1). fp64's `/` is div.rn.f64.
        if COMPUTE == tl.float32:
            g = tl.math.div_rn(g, grad_scale)
        else:
            g = g / grad_scale
    if MAXIMIZE:
        g = -g
    w = load_as(param_ptrs, mask, COMPUTE, FULL)
    if HAS_WEIGHT_DECAY:
        g = g + weight_decay * w

    u = g
    if HAS_MOMENTUM:
        # The first step's buffer is not even loaded: a fresh state's garbage (or NaN) must not
        # leak.
        if FULL:
            old_mask = later
        else:
            old_mask = mask & later
        old = widen(tl.load(momentum_ptrs, mask=old_mask, other=0), COMPUTE)
        buf, u = momentum_step(g, old, later, momentum, gain, NESTEROV)
        store_as(momentum_ptrs, buf, mask, FULL)
    return w, u


@triton.jit
def momentum_step(g, old, later, momentum, gain, NESTEROV: tl.constexpr):
    """(new buffer, direction) from g and the old buffer, torch.optim.SGD's rule: the first step
    (`later` false) takes the gradient itself as the buffer."""
    buf = tl.where(later, momentum * old + gain * g, g)
    u = buf
    if NESTEROV:
        u = g + momentum * buf
    return buf, u


@triton.jit
def combine(d1, d2, u, b1, b2, lr):
    """d_new, in the order every implementation computes it (a float or an 8-bit history)."""
    return (b1 * d1 + b2 * d2) - lr * u


@triton.jit
def update_elements(
    param_ptrs, grad_ptrs, d1_ptrs, d2_ptrs, momentum_ptrs, mask, later, multistep, lr,
    grad_scale, b1, b2, momentum, gain, weight_decay,
    HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr, COMPUTE: tl.constexpr,
    FULL: tl.constexpr,
):
    """The per-element step with a float history (FULL: see `direction`)."""
    w, u = direction(param_ptrs, grad_ptrs, momentum_ptrs, mask, later, grad_scale, momentum,
                     gain, weight_decay, HAS_MOMENTUM, NESTEROV, MAXIMIZE, HAS_WEIGHT_DECAY,
                     HAS_GRAD_SCALE, COMPUTE, FULL)

    # During the warm-up the history is not read at all: the masked loads give 0, so
    # d_new = -lr * u, the plain SGD step (no 0 * inf from a history holding inf).
    if FULL:
        history_mask = multistep
    else:
        history_mask = mask & multistep
    d1 = widen(tl.load(d1_ptrs, mask=history_mask, other=0), COMPUTE)
    d2 = widen(tl.load(d2_ptrs, mask=history_mask, other=0), COMPUTE)
    d_new = combine(d1, d2, u, b1, b2, lr)

    store_as(d2_ptrs, d_new, mask, FULL)
    store_as(param_ptrs, w + d_new, mask, FULL)


@triton.jit
def step_scalars(
    lr, lr_tensor_ptr, grad_scale, grad_scale_ptr, b1, b2, momentum, gain, weight_decay,
    LR_ON_DEVICE: tl.constexpr, GRAD_SCALE_ON_DEVICE: tl.constexpr, COMPUTE: tl.constexpr,
):
    """lr, grad_scale, b1, b2, momentum, gain, weight_decay as COMPUTE scalars. They arrive as
    fp64 scalars (see the kernel's annotations): tl.full turns them into COMPUTE scalars without a
    detour through fp32. lr and grad_scale are read from the device instead when they live there
    (kernel_scalars.py)."""
    if LR_ON_DEVICE:
        lr_c = widen(tl.load(lr_tensor_ptr), COMPUTE)
    else:
        lr_c = tl.full([], lr, COMPUTE)
    if GRAD_SCALE_ON_DEVICE:
        grad_scale_c = widen(tl.load(grad_scale_ptr), COMPUTE)
    else:
        grad_scale_c = tl.full([], grad_scale, COMPUTE)
    return (lr_c, grad_scale_c, tl.full([], b1, COMPUTE), tl.full([], b2, COMPUTE),
            tl.full([], momentum, COMPUTE), tl.full([], gain, COMPUTE),
            tl.full([], weight_decay, COMPUTE))


@triton.jit
def update_block(
    param_ptr, grad_ptr, d1_ptr, d2_ptr, momentum_ptr, n, count,
    lr, lr_tensor_ptr, grad_scale, grad_scale_ptr, found_inf_ptr, b1, b2, momentum, gain,
    weight_decay, switch_step,
    HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr, LR_ON_DEVICE: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
    GRAD_SCALE_ON_DEVICE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Step elements [0, min(n, BLOCK)) from the given pointers, for a tensor that has taken
    `count` steps."""
    if HAS_FOUND_INF:
        # A skipped step masks every load and store: nothing is read, nothing changes.
        n = tl.where(tl.load(found_inf_ptr) == 0, n, 0)
    # What the count decides, as blocks of one value: a scalar comparison splatted to a block
    # becomes an int32 mask under the interpreter of Triton 3.9, whose loads refuse non-boolean
    # masks. Compiled, a splat is known to be constant over the block, so the masks built from
    # these still allow vector loads.
    counts = tl.full([BLOCK], count, tl.int64)
    later = counts != 0
    multistep = counts >= switch_step
    lr_c, grad_scale_c, b1_c, b2_c, momentum_c, gain_c, weight_decay_c = step_scalars(
        lr, lr_tensor_ptr, grad_scale, grad_scale_ptr, b1, b2, momentum, gain, weight_decay,
        LR_ON_DEVICE, GRAD_SCALE_ON_DEVICE, COMPUTE)

    offsets = tl.arange(0, BLOCK)
    if n >= BLOCK:
        update_elements(
            param_ptr + offsets, grad_ptr + offsets, d1_ptr + offsets, d2_ptr + offsets,
            momentum_ptr + offsets, offsets < n, later, multistep, lr_c, grad_scale_c,
            b1_c, b2_c, momentum_c, gain_c, weight_decay_c,
            HAS_MOMENTUM, NESTEROV, MAXIMIZE, HAS_WEIGHT_DECAY, HAS_GRAD_SCALE, COMPUTE, True,
        )
    else:
        update_elements(
            param_ptr + offsets, grad_ptr + offsets, d1_ptr + offsets, d2_ptr + offsets,
            momentum_ptr + offsets, offsets < n, later, multistep, lr_c, grad_scale_c,
            b1_c, b2_c, momentum_c, gain_c, weight_decay_c,
            HAS_MOMENTUM, NESTEROV, MAXIMIZE, HAS_WEIGHT_DECAY, HAS_GRAD_SCALE, COMPUTE, False,
        )
