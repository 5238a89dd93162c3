"""The one entry to the step: `tmsgd` checks a call and runs it on one implementation (the native
op, the Triton op or the PyTorch step). TMSGD.step calls it once per run of tensors; users who
keep their own state (made by `init_state`) call it directly."""

from __future__ import annotations

import torch

from . import int8_history, ops, plan_checks, torch_step
from .coefficients import PAPER_COEFFICIENTS, delta_coefficients
from .implementations import choose
from .overlap import check_no_overlap
from .param_state import real_view
from .step_contract import StepScalars
from .validation import check_gradients, validate_hyperparameters, validate_state_dtypes


def init_state(
    params: list[torch.Tensor],
    momentum: float = 0.0,
    history_dtype: torch.dtype | None = None,
    capturable: bool = False,
    momentum_dtype: torch.dtype | None = None,
) -> dict[str, list[torch.Tensor]]:
    """Zero state for `params`, as lists: delta_even, delta_odd, momentum_buffers (empty when
    momentum == 0) and steps (CPU counts, or on each param's device with capturable=True).
    history_dtype=torch.int8 needs every param to take an 8-bit history
    (int8_history.eligible) and adds delta_even_scales and delta_odd_scales; with it,
    momentum_dtype=torch.int8 keeps the momentum buffers as 8-bit codes too and adds
    momentum_scales."""
    validate_state_dtypes(history_dtype, momentum_dtype)
    reals = [real_view(p) for p in params]
    quantized = history_dtype is torch.int8
    if quantized and not all(map(int8_history.eligible, reals)):
        raise ValueError("history_dtype=torch.int8 takes params of 2 or more dimensions, at "
                         f"least {int8_history.MIN_NUMEL} elements, fp32/bf16/fp16, dim 0 "
                         "outermost in memory")

    def zero_slots() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if not quantized:
            return [torch.zeros_like(r, dtype=history_dtype or r.dtype) for r in reals], []
        pairs = [int8_history.zeros_for(r) for r in reals]
        return [codes for codes, _ in pairs], [scales for _, scales in pairs]

    state: dict[str, list[torch.Tensor]] = {}
    state["delta_even"], even_scales = zero_slots()
    state["delta_odd"], odd_scales = zero_slots()
    if quantized:
        state["delta_even_scales"], state["delta_odd_scales"] = even_scales, odd_scales
    if momentum_dtype is torch.int8:
        buffers, state["momentum_scales"] = zero_slots() if momentum != 0 else ([], [])
    else:
        buffers = [torch.zeros_like(r) for r in reals] if momentum != 0 else []
    state["momentum_buffers"] = buffers
    state["steps"] = [torch.zeros((), dtype=torch.int64, device=r.device if capturable else "cpu")
                      for r in reals]
    return state


# Implementations chosen so far, by (backend, device): availability does not change within a
# process, and a dict lookup is what a traced step can afford.
_chosen: dict[tuple[str, torch.device], str] = {}

# Layout fingerprints of param lists already checked for overlaps, and hyperparameter sets
# already validated (both bounded): the optimizer calls every step with the same ones.
_checked_layouts: set[int] = set()
_valid_hyperparameters: set[tuple] = set()


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
    parity: torch_step.Parity | None = None,
    delta_even_scales: list[torch.Tensor] | None = None,
    delta_odd_scales: list[torch.Tensor] | None = None,
    momentum_scales: list[torch.Tensor] | None = None,
) -> None:
    """One TM-SGD step over `params` (one device and dtype; complex params as themselves) in
    place, with their state (from `init_state`) updated in place. The arguments are TMSGD's
    (docs/DESIGN.md section 5); `backend` is "auto" or an implementation name. `grad_scale` and
    `found_inf` are GradScaler's: gradients are divided by the first, and a non-zero second makes
    the step change nothing. `parity` is the torch implementation's record of which history slot
    is due (torch_step.Parity), kept by the optimizer per run; others ignore it. With an 8-bit
    history (`delta_even`/`delta_odd` int8 codes, int8_history.py) `delta_even_scales` and
    `delta_odd_scales` are their block scales, one tensor per param; `momentum_scales` likewise
    for 8-bit momentum buffers (int8 codes in `momentum_buffers`, only with an 8-bit history).

    Bad arguments raise before anything changes (checked in eager mode; a traced call relies on
    the eager checks of the same call site)."""
    if not params:
        return
    even_scales, odd_scales = delta_even_scales or [], delta_odd_scales or []
    buffer_scales = momentum_scales or []
    if not torch.compiler.is_compiling():
        _check(params, grads, delta_even, delta_odd, even_scales, odd_scales, momentum_buffers,
               buffer_scales, steps, lr=lr,
               momentum=momentum, dampening=dampening, weight_decay=weight_decay,
               nesterov=nesterov, maximize=maximize, coefficients=coefficients,
               switch_step=switch_step, backend=backend)
    device = params[0].device
    implementation = _chosen.get((backend, device))
    if implementation is None:
        implementation = _chosen[(backend, device)] = choose(backend, device)
    if params[0].is_complex():
        params, grads = list(map(real_view, params)), list(map(real_view, grads))
    if isinstance(lr, torch.Tensor) and lr.device != device and lr.device.type != "cpu":
        lr = lr.to(device)
    b1, b2 = delta_coefficients(coefficients)
    scalars = StepScalars.make(lr, b1, b2, momentum, dampening, weight_decay, nesterov,
                               maximize, switch_step)
    if implementation == "torch":
        torch_step.step((params, grads, delta_even, delta_odd, even_scales, odd_scales,
                         momentum_buffers, buffer_scales, steps), scalars, grad_scale,
                        found_inf, parity)
        return
    op = ops.triton_step if implementation == "triton" else ops.native_step
    op(params, grads, delta_even, delta_odd, even_scales, odd_scales, momentum_buffers,
       buffer_scales, steps, *scalars.arguments(), grad_scale, found_inf)


def _check(params, grads, delta_even, delta_odd, even_scales, odd_scales, momentum_buffers,
           buffer_scales, steps, *, momentum, **hyperparameters) -> None:
    options = dict(hyperparameters, momentum=momentum, capturable=False,
                   history_dtype=delta_even[0].dtype if delta_even else None,
                   momentum_dtype=momentum_buffers[0].dtype if buffer_scales else None)
    # Hyperparameters already found valid are not checked again (a float lr is part of the key;
    # a tensor lr's value may change, so it is checked every time).
    key = None if isinstance(options["lr"], torch.Tensor) else tuple(options.items())
    if key not in _valid_hyperparameters:
        validate_hyperparameters(options)
        if key is not None:
            if len(_valid_hyperparameters) > 1024:
                _valid_hyperparameters.clear()
            _valid_hyperparameters.add(key)
    if len({len(params), len(grads), len(delta_even), len(delta_odd), len(steps)}) != 1:
        raise ValueError("params, grads, delta_even, delta_odd and steps must have one length")
    quantized = delta_even[0].dtype == torch.int8
    if quantized != bool(even_scales) or quantized != bool(odd_scales) or (
            quantized and len({len(params), len(even_scales), len(odd_scales)}) != 1):
        raise ValueError("an int8 history needs delta_even_scales and delta_odd_scales, one "
                         "tensor per param (init_state(..., history_dtype=torch.int8)); another "
                         "history takes none")
    if len(momentum_buffers) != (len(params) if momentum != 0 else 0):
        raise ValueError("momentum_buffers needs one tensor per param when momentum != 0 "
                         "(init_state(..., momentum=...)) and must be empty otherwise")
    int8_buffers = bool(momentum_buffers) and momentum_buffers[0].dtype == torch.int8
    if int8_buffers != bool(buffer_scales) or (int8_buffers and (
            not quantized or len(buffer_scales) != len(params))):
        raise ValueError("8-bit momentum buffers (int8 codes) need momentum_scales, one tensor "
                         "per param, and an 8-bit history (init_state(..., history_dtype="
                         "torch.int8, momentum_dtype=torch.int8)); float buffers take none")
    check_gradients(params, grads, "")
    layout = plan_checks.layout_fingerprint(params)
    if layout not in _checked_layouts:
        check_no_overlap(params)
        if len(_checked_layouts) > 1024:
            _checked_layouts.clear()
        _checked_layouts.add(layout)
