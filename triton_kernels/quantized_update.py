"""The TM-SGD step of one program's blocks with an 8-bit history (tmsgd_kernels/int8_history.py,
the reference encoder whose codes and scales this produces bit for bit): each history slot is
int8 codes in the param's layout plus one fp32 scale per block of SCALE_BLOCK consecutive
elements of a row. A program owns BLOCK // SCALE_BLOCK whole blocks as a (blocks, SCALE_BLOCK)
tile, so one reduction along the tile's rows gives every block's absmax, and the one pass that
reads both slots and writes the param also writes the new slot's codes and scales.

    d      = float(code) * scale                       both slots (0 in the warm-up: not read)
    d_new  = (b1 * d1 + b2 * d2) - lr * u              element_update.combine, fp32
    scale  = absmax(d_new over the block) / 127        correctly rounded
    code   = clamp(round_half_even(d_new / scale), -127, 127), 0 where scale == 0 or NaN

An 8-bit momentum buffer (MOMENTUM_CODES: int8 codes in the param's layout, one scale per block
like the history's) is decoded the same way (not read on a first step), the new buffer is formed
in fp32 as with a float buffer and the step uses it unrounded; its codes and scales are then
stored by the same encoder.

A block's elements, found in one of two ways (BY_ROWS):
whole    rows made of whole blocks: block q is elements [q * 256, q * 256 + 256), so the
         program's blocks are one range (a flat range of such tensors too); full blocks only,
         so every mask is one value per block and the loads stay vectors
by rows  any row length r, with n = ceil(r / 256) blocks per row: block q is the (q mod n)-th
         of row q div n, from element (q div n) * r + 256 * (q mod n), as long as what is left
         of its row, up to 256
"""

import triton
import triton.language as tl

from . import int8_blocks
from .element_update import combine, direction, momentum_step, step_scalars, store_as

SCALE_BLOCK = tl.constexpr(int8_blocks.SCALE_BLOCK)
CODE_MAX = tl.constexpr(127.0)
# x + 1.5 * 2**23 - 1.5 * 2**23 is x rounded to the nearest integer, ties to even, for
# |x| <= 2**22 (here |x| <= 127): the sum's ulp is 1 and fp32 addition rounds half to even. Two
# separate roundings: no launch contracts (launch_rule.COMPILE_OPTIONS) and no compiler
# reassociates floating-point addition. The interpreter has no libdevice rint: this is one code
# for both.
ROUNDER = tl.constexpr(12582912.0)


@triton.jit
def block_scales(d_new, mask):
    """One scale per tile row: the absmax of its valid elements (`mask`) / 127."""
    magnitude = tl.where(mask, tl.abs(d_new), 0.0)
    # Compiled, tl.max skips NaN (max.f32); adding the sum of the block's NaNs (0.0 without)
    # makes a block with a NaN get a NaN scale, as torch's amax does: it decodes to NaN.
    nans = tl.where(magnitude == magnitude, 0.0, magnitude)
    absmax = tl.max(magnitude, axis=1) + tl.sum(nans, axis=1)
    return tl.math.div_rn(absmax, CODE_MAX)


@triton.jit
def codes_of(d_new, scales):
    """The int8 codes of the tile `d_new` with one scale per row."""
    # An all-zero block (scale 0) divides its zeros by 1: codes 0, no 0 / 0.
    ratio = tl.math.div_rn(d_new, tl.where(scales == 0, 1.0, scales)[:, None])
    rounded = (ratio + ROUNDER) - ROUNDER
    codes = tl.minimum(tl.maximum(rounded, -CODE_MAX), CODE_MAX)
    # A NaN ratio (a NaN scale, or inf / inf) stores 0, what torch's NaN -> int8 conversion
    # gives on x86 and CUDA.
    codes = tl.where(ratio == ratio, codes, 0.0)
    return codes.to(tl.int8)


@triton.jit
def update_quantized_blocks(
    param_ptr, grad_ptr, d1_ptr, d2_ptr, s1_ptr, s2_ptr, momentum_ptr, momentum_scales_ptr,
    first_block, blocks, row_length, count,
    lr, lr_tensor_ptr, grad_scale, grad_scale_ptr, found_inf_ptr, b1, b2, momentum, gain,
    weight_decay, switch_step,
    HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr, LR_ON_DEVICE: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
    GRAD_SCALE_ON_DEVICE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, BLOCK: tl.constexpr,
    BY_ROWS: tl.constexpr, MOMENTUM_CODES: tl.constexpr,
):
    """Step blocks [first_block, first_block + BLOCK // 256) of a tensor of `blocks` blocks
    (those past the end are masked off) from the tensor's first elements and scales, for a tensor
    that has taken `count` steps; `row_length` is read BY_ROWS only, `momentum_scales_ptr` with
    MOMENTUM_CODES only (the buffer's block scales; momentum_ptr then points to its codes)."""
    if HAS_FOUND_INF:
        # A skipped step masks every load and store: nothing is read, nothing changes.
        blocks = tl.where(tl.load(found_inf_ptr) == 0, blocks, 0)
    block_ids = first_block + tl.arange(0, BLOCK // SCALE_BLOCK)
    lanes = tl.arange(0, SCALE_BLOCK)
    in_range = block_ids < blocks
    if BY_ROWS:
        per_row = (row_length + SCALE_BLOCK - 1) // SCALE_BLOCK
        row = block_ids // per_row
        column = (block_ids - row * per_row) * SCALE_BLOCK
        starts = row * row_length + column
        mask = (lanes[None, :] < (row_length - column)[:, None]) & in_range[:, None]
    else:
        starts = block_ids * SCALE_BLOCK
        mask = tl.broadcast_to(in_range[:, None], (BLOCK // SCALE_BLOCK, SCALE_BLOCK))
    offsets = starts[:, None] + lanes[None, :]

    # What the count decides, as blocks of one value (element_update.update_block says why).
    counts = tl.full([BLOCK // SCALE_BLOCK, SCALE_BLOCK], count, tl.int64)
    later = counts != 0
    multistep = counts >= switch_step
    block_multistep = tl.full([BLOCK // SCALE_BLOCK], count, tl.int64) >= switch_step
    lr_c, grad_scale_c, b1_c, b2_c, momentum_c, gain_c, weight_decay_c = step_scalars(
        lr, lr_tensor_ptr, grad_scale, grad_scale_ptr, b1, b2, momentum, gain, weight_decay,
        LR_ON_DEVICE, GRAD_SCALE_ON_DEVICE, tl.float32)

    if MOMENTUM_CODES:
        # The gradient term only (no buffer); the 8-bit buffer is decoded and stepped here.
        w, g = direction(param_ptr + offsets, grad_ptr + offsets, momentum_ptr + offsets, mask,
                         later, grad_scale_c, momentum_c, gain_c, weight_decay_c, False,
                         NESTEROV, MAXIMIZE, HAS_WEIGHT_DECAY, HAS_GRAD_SCALE, tl.float32, False)
        # A first step reads neither the codes nor the scales (an unset buffer's may be NaN).
        block_later = tl.full([BLOCK // SCALE_BLOCK], count, tl.int64) != 0
        old_scales = tl.load(momentum_scales_ptr + block_ids, mask=in_range & block_later,
                             other=0)
        old = (tl.load(momentum_ptr + offsets, mask=mask & later, other=0).to(tl.float32)
               * old_scales[:, None])
        buf, u = momentum_step(g, old, later, momentum_c, gain_c, NESTEROV)
    else:
        w, u = direction(param_ptr + offsets, grad_ptr + offsets, momentum_ptr + offsets, mask,
                         later, grad_scale_c, momentum_c, gain_c, weight_decay_c, HAS_MOMENTUM,
                         NESTEROV, MAXIMIZE, HAS_WEIGHT_DECAY, HAS_GRAD_SCALE, tl.float32, False)

    # During the warm-up neither slot is read: codes and scales load as 0, so d_new is the
    # plain SGD step, as with a float history.
    history = mask & multistep
    block_history = in_range & block_multistep
    s1 = tl.load(s1_ptr + block_ids, mask=block_history, other=0)
    s2 = tl.load(s2_ptr + block_ids, mask=block_history, other=0)
    d1 = tl.load(d1_ptr + offsets, mask=history, other=0).to(tl.float32) * s1[:, None]
    d2 = tl.load(d2_ptr + offsets, mask=history, other=0).to(tl.float32) * s2[:, None]
    d_new = combine(d1, d2, u, b1_c, b2_c, lr_c)

    # The param and the scales are stored before the codes are computed: their registers are
    # then free during the divisions (each a call of ptxas's slow path for some operands).
    store_as(param_ptr + offsets, w + d_new, mask, False)
    scales = block_scales(d_new, mask)
    tl.store(s2_ptr + block_ids, scales, mask=in_range)
    tl.store(d2_ptr + offsets, codes_of(d_new, scales), mask=mask)
    if MOMENTUM_CODES:
        buffer_scales = block_scales(buf, mask)
        tl.store(momentum_scales_ptr + block_ids, buffer_scales, mask=in_range)
        tl.store(momentum_ptr + offsets, codes_of(buf, buffer_scales), mask=mask)
