"""Pure-PyTorch backend: the delta form with torch._foreach_* ops, no host synchronization.

Everything that depends on the step count (which history slot is newest, the first momentum
step, the warm-up) is computed as 0-dim tensors on the device, so the step never reads a device
value on the host and `torch.compile(fullgraph=True)` traces it without a break.
"""

from __future__ import annotations

import torch

from ..step_options import StepOptions

name = "torch"

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def unavailable_reason(device: torch.device) -> str | None:
    return None


def _opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _as_opmath(tensors: list[torch.Tensor], opmath: torch.dtype) -> list[torch.Tensor]:
    return [t.to(opmath) for t in tensors] if tensors[0].dtype != opmath else list(tensors)


def _views(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    sizes = [t.numel() for t in like]
    pieces = flat[: sum(sizes)].split(sizes)
    return [piece.view(t.shape) for piece, t in zip(pieces, like)]


def step_bucket(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    history: torch.Tensor,
    momentum_buffer: torch.Tensor | None,
    step: torch.Tensor,
    options: StepOptions,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
) -> None:
    if not params:
        return
    lr, b1, b2 = options.lr, options.b1, options.b2
    momentum, dampening, nesterov = options.momentum, options.dampening, options.nesterov
    opmath = _opmath_dtype(params[0].dtype)
    numel = sum(p.numel() for p in params)
    device = params[0].device

    # Step-dependent scalars, on the device. Slot `parity` holds d2 and receives d_new.
    parity = step % 2
    multistep = step >= options.switch_step

    def scalar(value: float) -> torch.Tensor:
        return torch.full((), value, dtype=opmath, device=device)

    zero = scalar(0.0)
    coef0 = torch.where(multistep & (parity == 1), scalar(b1), scalar(b2) * multistep)
    coef1 = torch.where(multistep & (parity == 0), scalar(b1), scalar(b2) * multistep)
    keep = None if found_inf is None else found_inf == 0

    grads = _as_opmath(grads, opmath)
    if grad_scale is not None:
        grads = torch._foreach_div(grads, grad_scale.to(opmath))
    if options.maximize:
        grads = torch._foreach_neg(grads)
    weights = _as_opmath(params, opmath)
    if options.weight_decay != 0:
        grads = torch._foreach_add(grads, weights, alpha=options.weight_decay)

    direction = grads
    if momentum != 0:
        first = step == 0
        buffers = _views(momentum_buffer, params)
        old = _as_opmath(buffers, opmath)
        retain = torch.where(first, zero, scalar(momentum))
        gain = torch.where(first, scalar(1.0), scalar(1.0 - dampening))
        new = torch._foreach_add(torch._foreach_mul(old, retain), torch._foreach_mul(grads, gain))
        if keep is not None:
            new = [torch.where(keep, n, o) for n, o in zip(new, old)]
        torch._foreach_copy_(buffers, new)
        direction = torch._foreach_add(grads, new, alpha=momentum) if nesterov else new

    # d_new = coef0 * slot0 + coef1 * slot1 - lr * u, built in one flat buffer.
    d_new = history[0, :numel].to(opmath) * coef0 + history[1, :numel].to(opmath) * coef1
    d_views = _views(d_new, params)
    if isinstance(lr, torch.Tensor):
        torch._foreach_sub_(d_views, torch._foreach_mul(direction, lr.to(opmath)))
    else:
        torch._foreach_add_(d_views, direction, alpha=-lr)

    slot = parity.view(1)
    stored = d_new.to(history.dtype).unsqueeze(0)
    if keep is None and params[0].dtype == opmath:
        torch._foreach_add_(params, d_views)
    else:
        updated = torch._foreach_add(weights, d_views)
        if keep is not None:
            updated = [torch.where(keep, n, o) for n, o in zip(updated, weights)]
            stored = torch.where(keep, stored, history[:, :numel].index_select(0, slot))
        torch._foreach_copy_(params, updated)
    history[:, :numel].index_copy_(0, slot, stored)
    step.add_(1 if keep is None else keep.to(step.dtype))
