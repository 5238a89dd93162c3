"""The TM-SGD step in plain PyTorch: the `torch` implementation of the kernel contract
(tmsgd_kernels/step_contract.py), the reference the kernels match operation for operation, and
the one torch.compile traces.

Two paths compute the same step:

host_step    counts on the CPU, eager. The counts are read on the host once per call, the params
             are grouped by what the count decides (history slot, first momentum step, warm-up),
             and each group runs torch._foreach_* ops, writing d_new in place over its d2 slot.
device_step  counts on an accelerator (capturable), or under torch.compile. Everything that
             depends on a count is a torch.where on the device, per tensor, so nothing is read on
             the host and one traced graph serves every step (a tensor lr is a graph input).

With a float lr both run the same elementwise ops in the same order, so in eager mode they give
bitwise the same result.

A traced step that must serve any count selects between both history slots and writes both (28
instead of 24 bytes per fp32 element). A `Parity` record, kept by the caller per run of params
that always step together, knows which slot is due while the counts live on the CPU; the traced
step reads it (dynamo guards on it: one graph per slot) and checks it against the counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import int8_history
from .step_contract import StepScalars

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def step(
    lists: Sequence[list[torch.Tensor]],
    scalars: StepScalars,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
    parity: Parity | None = None,
) -> None:
    """The contract's step on its tensor lists, in step_contract.TENSOR_LISTS' order; `parity`
    (see the module docstring) is read while tracing and advanced after every step."""
    steps = lists[-1]
    on_device = torch.compiler.is_compiling() or (steps and steps[0].device.type != "cpu")
    if on_device:
        odd_slot = parity.odd if parity is not None and torch.compiler.is_compiling() else None
        device_step(*lists, scalars, grad_scale, found_inf, odd_slot)
    else:
        host_step(*lists, scalars, grad_scale, found_inf)
    if parity is not None:
        parity.advance(found_inf)


class Parity:
    """Whether every count of a run of params is odd (True), even (False), or unknown (None: the
    counts disagree, or a step may have been skipped). Made from the counts when a plan is built;
    valid while the run's params step together, which a plan guarantees (it is rebuilt when the
    set of params with gradients changes)."""

    def __init__(self, counts: list[torch.Tensor]) -> None:
        odd = {int(count) % 2 == 1 for count in counts}
        self.odd: bool | None = odd.pop() if len(odd) == 1 else None

    def advance(self, found_inf: torch.Tensor | None) -> None:
        if self.odd is not None:
            self.odd = None if found_inf is not None else not self.odd


def _opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _check_grads(params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    if len(grads) != len(params):
        raise RuntimeError(f"got {len(grads)} grads for {len(params)} params")
    for i, (p, g) in enumerate(zip(params, grads)):
        if p.shape != g.shape or p.dtype != g.dtype or p.device != g.device:
            raise RuntimeError(
                f"grads[{i}] ({tuple(g.shape)}, {g.dtype}, {g.device}) does not match "
                f"params[{i}] ({tuple(p.shape)}, {p.dtype}, {p.device})")


# ----------------------------------------------------------------------------- host path


def host_step(params, grads, delta_even, delta_odd, delta_even_scales, delta_odd_scales,
              momentum_buffers, momentum_scales, steps, scalars, grad_scale=None,
              found_inf=None) -> None:
    """The eager step for counts on the CPU (see the module docstring).

    A tensor lr or found_inf is read on the host: free for CPU tensors, one synchronization for
    an accelerator's (as torch.optim.SGD's foreach step does with a tensor lr); device_step
    reads nothing.
    """
    _check_grads(params, grads)
    if not params or (found_inf is not None and found_inf.item() != 0):
        return
    lr = scalars.lr if scalars.lr_tensor is None else scalars.lr_tensor.item()
    # CPU counts: one .item() each costs ~23 us for 161 tensors, torch.stack(...).tolist()
    # ~47 us (2-core AMD EPYC, torch 2.13); neither waits on a device.
    counts = list(map(torch.Tensor.item, steps))
    lists = (params, grads, delta_even, delta_odd, delta_even_scales, delta_odd_scales,
             momentum_buffers, momentum_scales)
    if counts.count(counts[0]) == len(counts):  # the usual case: one count for all
        _host_group(*lists, *_host_key(counts[0], scalars), scalars, lr, grad_scale)
    else:
        keys = [_host_key(k, scalars) for k in counts]
        for key in set(keys):
            picked = [i for i, other in enumerate(keys) if other == key]
            sublists = ([t[i] for i in picked] if t else [] for t in lists)
            _host_group(*sublists, *key, scalars, lr, grad_scale)
    torch._foreach_add_(steps, 1)


def _host_key(count: int, scalars: StepScalars) -> tuple[bool, bool, bool]:
    """What a count decides: d2 in the odd slot, the first momentum step, past the warm-up."""
    return count % 2 == 1, scalars.momentum != 0 and count == 0, count >= scalars.switch_step


def _host_group(params, grads, delta_even, delta_odd, even_scales, odd_scales, buffers,
                buffer_scales, odd, first, multistep, scalars, lr, grad_scale) -> None:
    opmath = _opmath(params[0].dtype)
    u = _host_direction(params, grads, opmath, scalars, grad_scale)
    if buffers:
        # On the first step the buffer becomes u itself: an unset (garbage, NaN) buffer is
        # never read.
        if first:
            new = u
        else:
            # An 8-bit buffer is decoded to fp32 first (new tensors, so the math runs on them).
            new = (list(map(int8_history.decode, buffers, buffer_scales)) if buffer_scales
                   else _widened(buffers, opmath))
            torch._foreach_mul_(new, scalars.momentum)
            torch._foreach_add_(new, u, alpha=1 - scalars.dampening)
        if buffer_scales:  # the step goes on with the fp32 buffer; its codes are stored
            for values, codes, scales in zip(new, buffers, buffer_scales):
                int8_history.encode_into(values, codes, scales)
        elif new is not buffers:
            torch._foreach_copy_(buffers, new)
        u = torch._foreach_add(u, new, alpha=scalars.momentum) if scalars.nesterov else new

    d2, d1 = (delta_odd, delta_even) if odd else (delta_even, delta_odd)
    s2, s1 = (odd_scales, even_scales) if odd else (even_scales, odd_scales)
    if multistep:
        # An 8-bit history is decoded to fp32 first (new tensors, so the math runs on them).
        values2 = list(map(int8_history.decode, d2, s2)) if s2 else d2
        values1 = list(map(int8_history.decode, d1, s1)) if s1 else d1
        d_new = _widened(values2, torch.promote_types(values2[0].dtype, opmath))
        torch._foreach_mul_(d_new, scalars.b2)
        torch._foreach_add_(d_new, values1, alpha=scalars.b1)
        torch._foreach_add_(d_new, u, alpha=-lr)
    else:
        # Warm-up: SGD's step, not 0 * history - lr * u (0 * inf would be NaN).
        d_new = torch._foreach_mul(u, -lr)
    if s2:
        for values, codes, scales in zip(d_new, d2, s2):
            int8_history.encode_into(values, codes, scales)
    elif d_new is not d2:
        torch._foreach_copy_(d2, d_new)
    torch._foreach_add_(params, d_new)


def _host_direction(params, grads, opmath, scalars, grad_scale) -> list[torch.Tensor]:
    """u before momentum: the grads unscaled, negated if maximizing, plus weight decay; a new
    list wherever the grads would otherwise be changed."""
    u = grads if grads[0].dtype == opmath else [g.to(opmath) for g in grads]
    if grad_scale is not None:
        u = torch._foreach_div(u, grad_scale.reshape(()).to(opmath))
    if scalars.maximize:
        u = torch._foreach_neg(u)
    if scalars.weight_decay != 0:
        u = torch._foreach_add(u, params, alpha=scalars.weight_decay)
    return u


def _widened(tensors: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """`tensors` themselves when their dtype holds `dtype` (the math then runs in place), else
    copies in `dtype`."""
    if torch.promote_types(tensors[0].dtype, dtype) == tensors[0].dtype:
        return tensors
    return [t.to(dtype) for t in tensors]


# --------------------------------------------------------------------------- device path


def device_step(params, grads, delta_even, delta_odd, delta_even_scales, delta_odd_scales,
                momentum_buffers, momentum_scales, steps, scalars, grad_scale=None,
                found_inf=None, odd_slot=None) -> None:
    """The step with every count-dependent choice made on the device (see the module
    docstring): no host read, no data-dependent Python branch, so torch.compile traces it
    whole and CUDA graphs can capture it."""
    _check_grads(params, grads)
    if not params:
        return
    opmath = _opmath(params[0].dtype)
    lr = scalars.lr_value
    if isinstance(lr, torch.Tensor):
        # Shape (1,) would broadcast a 0-dim param's update to shape (1,).
        lr = lr.reshape(()).to(opmath)
    scale = None if grad_scale is None else grad_scale.reshape(()).to(opmath)
    keep = None if found_inf is None else found_inf.reshape(()) == 0
    absent = [None] * len(params)
    for p, g, even, odd, even_scale, odd_scale, buf, buf_scale, count in zip(
            params, grads, delta_even, delta_odd, delta_even_scales or absent,
            delta_odd_scales or absent, momentum_buffers or absent, momentum_scales or absent,
            steps):
        # .to: under torch.compile the counts of a capturable=False step are still on the CPU.
        count = count.reshape(()).to(p.device)
        _device_one(p, g, _Slot(even, even_scale), _Slot(odd, odd_scale),
                    None if buf is None else _Slot(buf, buf_scale), count, opmath, scalars, lr,
                    scale, keep, odd_slot)
    torch._foreach_add_(steps, 1 if keep is None else keep.to(steps[0]))


class _Slot:
    """One history slot or momentum buffer of one param: a tensor of its dtype, or 8-bit codes
    and their block scales (int8_history.py)."""

    def __init__(self, values: torch.Tensor, scales: torch.Tensor | None) -> None:
        self.values, self.scales = values, scales

    def read(self) -> torch.Tensor:
        if self.scales is None:
            return self.values
        return int8_history.decode(self.values, self.scales)

    def write(self, d_new: torch.Tensor, where: torch.Tensor | None) -> None:
        """Store `d_new` here where `where` holds (everywhere when None)."""
        if self.scales is None:
            self.values.copy_(d_new if where is None else torch.where(where, d_new, self.values))
            return
        codes, scales = torch.empty_like(self.values), torch.empty_like(self.scales)
        int8_history.encode_into(d_new, codes, scales)
        if where is not None:
            codes = torch.where(where, codes, self.values)
            scales = torch.where(where, scales, self.scales)
        self.values.copy_(codes)
        self.scales.copy_(scales)


def _device_one(p, g, even: _Slot, odd: _Slot, buf: _Slot | None, count, opmath, scalars, lr,
                scale, keep, odd_slot) -> None:
    u = g.to(opmath)
    if scale is not None:
        u = u / scale
    if scalars.maximize:
        u = -u
    if scalars.weight_decay != 0:
        u = torch.add(u, p, alpha=scalars.weight_decay)
    if buf is not None:
        blended = torch.add(buf.read().to(opmath) * scalars.momentum, u,
                            alpha=1 - scalars.dampening)
        new = torch.where(count == 0, u, blended)
        buf.write(new, keep)
        u = torch.add(u, new, alpha=scalars.momentum) if scalars.nesterov else new

    even_values, odd_values = even.read(), odd.read()
    if odd_slot is None:
        is_odd = count % 2 == 1
        d2 = torch.where(is_odd, odd_values, even_values)
        d1 = torch.where(is_odd, even_values, odd_values)
    else:
        # The caller's record of the parity must be the count's: a count edited in place
        # behind the optimizer's back fails here instead of stepping the wrong slot.
        torch._assert_async(count % 2 == int(odd_slot),
                            "TMSGD: a step count changed outside step() and load_state_dict()")
        d2, d1 = (odd_values, even_values) if odd_slot else (even_values, odd_values)
    multi = d2.to(torch.promote_types(d2.dtype, opmath)) * scalars.b2
    multi = torch.add(multi, d1, alpha=scalars.b1)
    scaled = u * lr if isinstance(lr, torch.Tensor) else None
    d_new = torch.add(multi, u, alpha=-lr) if scaled is None else multi - scaled
    if scalars.switch_step:  # counts are never negative: with no warm-up, every step is multi
        # Warm-up selects SGD's step rather than zeroing the history's weight (0 * inf is NaN).
        sgd = u * -lr if scaled is None else -scaled
        d_new = torch.where(count >= scalars.switch_step, d_new, sgd)

    if odd_slot is not None:
        (odd if odd_slot else even).write(d_new, keep)
    else:
        write_odd = is_odd if keep is None else is_odd & keep
        write_even = ~is_odd if keep is None else ~is_odd & keep
        even.write(d_new, write_even)
        odd.write(d_new, write_odd)
    if keep is None:
        p.add_(d_new)
    else:
        p.copy_(torch.where(keep, p + d_new, p))
