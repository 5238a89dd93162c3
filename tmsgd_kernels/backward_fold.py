"""Gradient accumulation without a gradient buffer (docs/STEP_IN_BACKWARD.md): a TM-SGD step is
linear in the gradient once the state is fixed, so each micro-batch's gradient is folded into
the state as it arrives and then freed, and the last micro-batch of a cycle applies the step.

With G = g_1 + ... + g_k (negated when maximizing) and t = g_1 + weight_decay * W (W does not
move during a cycle, so the decay term is counted once, with the first micro-batch):

    no momentum   fold 1:     S = b1 d1 + b2 d2 - lr t       (warm-up: S = -lr t)
                  fold j > 1: S = S - lr g_j
                  apply:      W = W + S                      S is d_new, in the outgoing slot
    momentum      fold 1:     buf = m buf + (1 - dampening) t   (first momentum step: buf = t)
                  fold j > 1: buf = buf + (1 - dampening) g_j   (first momentum step: + g_j)
                  apply:      d_new = b1 d1 + b2 d2 - lr buf    (warm-up: -lr buf), W += d_new
    nesterov      both of the above (u = G' + m buf: S collects b1 d1 + b2 d2 - lr G' and
                  the apply adds -lr m buf to it)

S lives in the history slot the step overwrites anyway (the one holding d2: d1 is still read at
fold 1 and kept for the next step), and buf in the momentum buffer, so no tensor is added. The
real numbers are the normal step's; the rounding differs (every fold rounds once or twice
instead of autograd's k - 1 additions and the step's three), which tests/test_step_in_backward.py
bounds. The slot and the buffer are computed in their own dtype, so both must hold fp32 at
least: `accumulator_problem` says which param cannot, before anything changes.

All of it is torch._foreach_* ops over the params of one group, dtype and count class, on any
device; the backend's kernels are not used for a cycle of more than one micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .coefficients import delta_coefficients

_WIDE = (torch.float32, torch.float64)


@dataclass
class Slots:
    """One param's state as a fold sees it (local tensors for DTensor params)."""

    param: torch.Tensor
    delta_even: torch.Tensor
    delta_odd: torch.Tensor
    buffer: torch.Tensor | None
    step: torch.Tensor


@dataclass
class Partial:
    """A param folded at least once in the current cycle: what its count decided at fold 1."""

    slots: Slots
    odd: bool  # d2 (the slot folded into) is delta_odd
    first_momentum: bool  # buf = t at fold 1 (count 0, or a buffer started now), no dampening
    multistep: bool  # past the warm-up: the history is read
    momentum: bool  # the group's momentum was on (the buffer accumulates)
    nesterov: bool

    def outgoing(self) -> torch.Tensor:
        return self.slots.delta_odd if self.odd else self.slots.delta_even

    def incoming(self) -> torch.Tensor:
        return self.slots.delta_even if self.odd else self.slots.delta_odd


def accumulator_problem(history: torch.dtype, param: torch.dtype, group: dict) -> str | None:
    """Why this param cannot accumulate over micro-batches under `group`, or None. The fold
    keeps the partial step in the history slot (and, with momentum, the partial buffer in the
    buffer) and computes d_new there: both must hold fp32 (an 8-bit momentum buffer needs an
    8-bit history, so it is refused with it)."""
    if history not in _WIDE:
        return (f"its history is {history}: the fold keeps the partial step in the history "
                f"slot, and rounding it to {history} at every micro-batch loses the gradient's "
                f"low bits (use history_dtype=torch.float32, or accumulation_steps=1)")
    if group["momentum"] != 0 and param not in _WIDE:
        return (f"its momentum buffer is {param}: the buffer accumulates the micro-batches, and "
                f"rounding it to {param} at every micro-batch loses precision (use fp32 params "
                f"with momentum, or accumulation_steps=1)")
    return None


def _directions(grads: list[torch.Tensor], dtype: torch.dtype, maximize: bool) -> list:
    """The gradients in the accumulator's dtype, negated when maximizing (new tensors only
    where needed: the gradients are freed right after)."""
    g = grads if grads[0].dtype == dtype else [x.to(dtype) for x in grads]
    return torch._foreach_neg(g) if maximize else g


def fold_first(partials: list[Partial], grads: list[torch.Tensor], group: dict) -> None:
    """Fold 1 of a cycle for params whose Partial records share (odd, first_momentum,
    multistep) and one dtype."""
    first = partials[0]
    momentum, nesterov = group["momentum"], group["nesterov"]
    params = [p.slots.param for p in partials]
    accumulator = (first.slots.buffer if momentum != 0 else first.outgoing()).dtype
    t = _directions(grads, accumulator, group["maximize"])
    if group["weight_decay"] != 0:
        t = torch._foreach_add(t, params, alpha=group["weight_decay"])
    if momentum != 0:
        buffers = [p.slots.buffer for p in partials]
        if first.first_momentum:
            torch._foreach_copy_(buffers, t)
        else:
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, t, alpha=1 - group["dampening"])
        if not nesterov:
            return
    outgoing = [p.outgoing() for p in partials]
    if first.multistep:
        b1, b2 = delta_coefficients(group["coefficients"])
        torch._foreach_mul_(outgoing, b2)
        torch._foreach_add_(outgoing, [p.incoming() for p in partials], alpha=b1)
        torch._foreach_add_(outgoing, t, alpha=-_lr(group))
    else:  # warm-up: SGD's step, the history not read (0 * inf would be NaN)
        torch._foreach_copy_(outgoing, torch._foreach_mul(t, -_lr(group)))


def fold_more(partials: list[Partial], grads: list[torch.Tensor], group: dict) -> None:
    """Fold j > 1 for params whose Partial records share (first_momentum, momentum, nesterov)
    and one dtype."""
    first = partials[0]
    accumulator = (first.slots.buffer if first.momentum else first.outgoing()).dtype
    g = _directions(grads, accumulator, group["maximize"])
    if first.momentum:
        dampening = 0.0 if first.first_momentum else group["dampening"]
        torch._foreach_add_([p.slots.buffer for p in partials], g, alpha=1 - dampening)
        if not first.nesterov:
            return
    torch._foreach_add_([p.outgoing() for p in partials], g, alpha=-_lr(group))


def apply(partials: list[Partial], group: dict) -> None:
    """The end of a cycle for params whose Partial records share (odd, multistep, momentum,
    nesterov) and one dtype: d_new completed in the outgoing slot, added to the params, counts
    advanced."""
    first = partials[0]
    outgoing = [p.outgoing() for p in partials]
    if first.momentum:
        buffers = [p.slots.buffer for p in partials]
        if first.nesterov:
            torch._foreach_add_(outgoing, buffers, alpha=-_lr(group) * group["momentum"])
        elif first.multistep:
            b1, b2 = delta_coefficients(group["coefficients"])
            torch._foreach_mul_(outgoing, b2)
            torch._foreach_add_(outgoing, [p.incoming() for p in partials], alpha=b1)
            torch._foreach_add_(outgoing, buffers, alpha=-_lr(group))
        else:
            torch._foreach_copy_(outgoing, torch._foreach_mul(buffers, -_lr(group)))
    torch._foreach_add_([p.slots.param for p in partials], outgoing)
    torch._foreach_add_([p.slots.step for p in partials], 1)


def _lr(group: dict) -> float:
    lr = group["lr"]
    return lr.item() if isinstance(lr, torch.Tensor) else lr
