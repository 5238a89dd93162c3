"""Functional TM-SGD for users who keep their own state (one bucket: same device and dtype)."""

from __future__ import annotations

import torch

from . import backends
from .buckets import allocate_state, real_view
from .coefficients import PAPER_COEFFICIENTS, delta_coefficients
from .step_options import StepOptions
from .validation import validate_hyperparameters


def init_state(
    params: list[torch.Tensor], momentum: float = 0.0, history_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Zero state for `params`: (history [2, N], momentum_buffer [N] or None, step)."""
    return allocate_state(params, momentum, history_dtype)


def tmsgd(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    history: torch.Tensor,
    momentum_buffer: torch.Tensor | None,
    step: torch.Tensor,
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
    """One TM-SGD step over `params` in place, with state from `init_state` (updated in place)."""
    validate_hyperparameters(
        dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
             nesterov=nesterov, maximize=maximize, coefficients=coefficients,
             switch_step=switch_step, history_dtype=history.dtype, backend=backend,
             flat_params=False, capturable=False)
    )
    reals = [real_view(p) for p in params]
    real_grads = [real_view(g) for g in grads]
    if not reals:
        return
    device, dtype = reals[0].device, reals[0].dtype
    if any(r.device != device or r.dtype != dtype for r in reals + real_grads):
        raise ValueError("params and grads must share one device and dtype")
    if any(r.shape != g.shape for r, g in zip(reals, real_grads)) or len(reals) != len(grads):
        raise ValueError("grads must match params one to one in shape")
    if any(not r.is_contiguous() for r in reals):
        raise ValueError("params must be contiguous")
    total = sum(r.numel() for r in reals)
    if history.dim() != 2 or history.shape[0] != 2 or history.shape[1] < total:
        raise ValueError(f"history must have shape [2, >= {total}], got {tuple(history.shape)}")
    if (momentum != 0) != (momentum_buffer is not None):
        raise ValueError("momentum_buffer must be given exactly when momentum != 0")
    if momentum_buffer is not None and momentum_buffer.numel() < total:
        raise ValueError(f"momentum_buffer needs >= {total} elements")
    if step.dim() != 0 or step.dtype != torch.int64 or step.device != device:
        raise ValueError("step must be an int64 0-dim tensor on the params' device")
    b1, b2 = delta_coefficients(coefficients)
    options = StepOptions(lr, b1, b2, momentum, dampening, weight_decay, nesterov, maximize,
                          switch_step)
    backends.resolve(backend, device).step_bucket(
        reals, [g.contiguous() for g in real_grads], history, momentum_buffer, step, options,
        grad_scale, found_inf,
    )
