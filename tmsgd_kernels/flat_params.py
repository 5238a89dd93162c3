"""flat_params=True: each bucket's params and grads live in one contiguous buffer each.

At the bucket's first step the params' values and grads are copied into two flat buffers (in
the bucket's order, so element i of the buffers is column i of the bucket's history) and every
param's `.data` and `.grad` become views into them; the kernel then sees one flat range instead
of a list of tensors. `zero_grad` zeroes the grad buffer and keeps the views.

Anything that breaks a view costs one copy, never correctness. Before each step every param is
checked (two pointer comparisons): a `.data` replaced by the user (or by load_state_dict-like
code that assigns new tensors) is copied into the buffer, a `.grad` that autograd or the user
allocated anew (after `zero_grad(set_to_none=True)` elsewhere, or an assignment) is copied into
the grad buffer, and both are pointed back at their views.
"""

from __future__ import annotations

import torch

from .buckets import real_view


class FlatLayout:
    """The flat buffers of one bucket and the views its params hold into them."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        reals = [real_view(p) for p in params]
        self.params = params
        self.sizes = [r.numel() for r in reals]
        total = sum(self.sizes)
        dtype, device = reals[0].dtype, reals[0].device
        self.flat_param = torch.empty(total, dtype=dtype, device=device)
        self.flat_grad = torch.empty(total, dtype=dtype, device=device)
        self.param_views: list[torch.Tensor] = []
        self.grad_views: list[torch.Tensor] = []
        offset = 0
        for param, real, size in zip(params, reals, self.sizes):
            param_slot = self.flat_param[offset : offset + size].view(real.shape)
            grad_slot = self.flat_grad[offset : offset + size].view(real.shape)
            param_slot.copy_(real)
            if param.grad is not None:
                grad_slot.copy_(real_view(param.grad))
            else:
                grad_slot.zero_()
            self.param_views.append(_as_param_dtype(param_slot, param))
            self.grad_views.append(_as_param_dtype(grad_slot, param))
            offset += size
        self._param_ptrs = [v.data_ptr() for v in self.param_views]
        self._grad_ptrs = [v.data_ptr() for v in self.grad_views]
        for i in range(len(params)):
            self._point_param(i)
            self._point_grad(i)

    def _point_param(self, i: int) -> None:
        self.params[i].data = self.param_views[i]

    def _point_grad(self, i: int) -> None:
        self.params[i].grad = self.grad_views[i]

    def repair(self) -> int:
        """Copy back and re-point every broken view; returns how many were repaired."""
        repaired = 0
        for i, param in enumerate(self.params):
            if param.data_ptr() != self._param_ptrs[i]:
                # The param's current value is the truth: move it into the buffer.
                self.param_views[i].copy_(param.detach())
                self._point_param(i)
                repaired += 1
            grad = param.grad
            if grad is None:
                # No gradient this step: the optimizer left this param out of the layout, so
                # a layout with it is never stepped (it is rebuilt); keep the view zeroed.
                self.grad_views[i].zero_()
                self._point_grad(i)
                repaired += 1
            elif grad.data_ptr() != self._grad_ptrs[i]:
                self.grad_views[i].copy_(grad)
                self._point_grad(i)
                repaired += 1
        return repaired

    def kernel_tensors(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Repair the views, then the (params, grads) lists the backend steps: one range each."""
        self.repair()
        return [self.flat_param], [self.flat_grad]

    def zero_grad(self) -> None:
        self.flat_grad.zero_()
        for i, param in enumerate(self.params):
            grad = param.grad
            if grad is None or grad.data_ptr() != self._grad_ptrs[i]:
                self._point_grad(i)


def _as_param_dtype(real: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """The slot as the param sees it: complex params are stored as their real views."""
    return torch.view_as_complex(real) if param.is_complex() else real


def attach(buckets: list) -> None:
    """Give every bucket its flat buffers (the bucket's params must all have grads)."""
    for bucket in buckets:
        bucket.flat = FlatLayout(bucket.params) if bucket.params else None


def layouts(optimizer) -> list[FlatLayout]:
    """The flat layouts of the optimizer's current buckets."""
    found = []
    for _, buckets in optimizer._layouts.values():
        found.extend(b.flat for b in buckets if b.flat is not None)
    return found


def zero_grad(optimizer, set_to_none: bool, base_zero_grad) -> None:
    """torch.optim's zero_grad, except that set_to_none=False zeroes each flat grad buffer in one
    op and keeps the grads as views. set_to_none=True sets grads to None as torch.optim does (a
    param that then gets no gradient must be skipped, not stepped with zeros); the fresh grads
    autograd allocates are copied into the buffer at the next step."""
    flat = layouts(optimizer)
    if set_to_none or not flat:
        base_zero_grad(set_to_none)
        return
    held = [(p, p.grad) for layout in flat for p in layout.params]
    for param, _ in held:  # hide the flat grads from the base implementation
        param.grad = None
    try:
        base_zero_grad(set_to_none)
    finally:
        for param, grad in held:
            param.grad = grad
    for layout in flat:
        layout.zero_grad()
