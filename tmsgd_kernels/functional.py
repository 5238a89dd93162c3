"""Functional TM-SGD for users who keep their own state: the kernel contract of
tmsgd_kernels/ops.py behind the same checks the optimizer makes."""

from __future__ import annotations

import torch

from . import backends
from .coefficients import PAPER_COEFFICIENTS, delta_coefficients
from .overlap import check_no_overlap
from .param_state import real_view
from .step_scalars import StepScalars
from .validation import validate_hyperparameters


def init_state(
    params: list[torch.Tensor],
    momentum: float = 0.0,
    history_dtype: torch.dtype | None = None,
    capturable: bool = False,
) -> dict[str, list[torch.Tensor]]:
    """Zero state for `params`, as lists: delta_even, delta_odd, momentum_buffers (empty when
    momentum == 0) and steps (CPU counts, or on each param's device with capturable=True)."""
    reals = [real_view(p) for p in params]
    return {
        "delta_even": [torch.zeros_like(r, dtype=history_dtype or r.dtype) for r in reals],
        "delta_odd": [torch.zeros_like(r, dtype=history_dtype or r.dtype) for r in reals],
        "momentum_buffers": [torch.zeros_like(r) for r in reals] if momentum != 0 else [],
        "steps": [torch.zeros((), dtype=torch.int64,
                              device=r.device if capturable else "cpu") for r in reals],
    }


def tmsgd(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    delta_even: list[torch.Tensor],
    delta_odd: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    steps: list[torch.Tensor],
    *,
    lr: float | torch.Tensor,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    coefficients: tuple[float, float, float] = PAPER_COEFFICIENTS,
    switch_step: int = 0,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
    backend: str = "auto",
) -> None:
    """One TM-SGD step over `params` (one device and dtype) in place, with state from
    `init_state` (updated in place)."""
    history = delta_even[0].dtype if delta_even else None
    validate_hyperparameters(
        dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
             nesterov=nesterov, maximize=maximize, coefficients=coefficients,
             switch_step=switch_step, history_dtype=history, backend=backend,
             capturable=False)
    )
    if not params:
        return
    if len({len(params), len(grads), len(delta_even), len(delta_odd), len(steps)}) != 1:
        raise ValueError("params, grads, delta_even, delta_odd and steps must have one length")
    if len(momentum_buffers) != (len(params) if momentum != 0 else 0):
        raise ValueError("momentum_buffers needs one tensor per param when momentum != 0 "
                         "(init_state(..., momentum=...)) and must be empty otherwise")
    check_no_overlap(params)
    reals = [real_view(p) for p in params]
    b1, b2 = delta_coefficients(coefficients)
    scalars = StepScalars(lr, b1, b2, momentum, dampening, weight_decay, nesterov, maximize,
                          switch_step)
    backends.resolve(backend, reals[0].device).step(
        reals, [real_view(g) for g in grads], delta_even, delta_odd, momentum_buffers, steps,
        scalars, grad_scale, found_inf)
