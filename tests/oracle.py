"""The test oracle: TM-SGD in the paper's form (eq. 8), float64, one parameter at a time.

It keeps whole weights W[k], W[k-1], W[k-2] (not the delta form the backends use), so agreement
with it checks the algebra of the delta form as well as the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class OracleParam:
    """One parameter's paper-form trajectory, in float64."""

    weight: torch.Tensor
    previous: torch.Tensor = field(init=False)  # W[k-1]
    before: torch.Tensor = field(init=False)  # W[k-2]
    momentum_buffer: torch.Tensor | None = None
    step: int = 0

    def __post_init__(self) -> None:
        self.weight = self.weight.detach().to(torch.float64).clone()
        # The paper starts with W[-1] = W[-2] = W[0]: zero history.
        self.previous = self.weight.clone()
        self.before = self.weight.clone()

    @property
    def d1(self) -> torch.Tensor:
        return self.weight - self.previous

    @property
    def d2(self) -> torch.Tensor:
        return self.previous - self.before


def oracle_step(
    state: OracleParam,
    grad: torch.Tensor,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    coefficients: tuple[float, float, float] = (1.5, -1.0, 0.5),
    switch_step: int = 0,
    grad_scale: float | None = None,
    found_inf: bool = False,
) -> None:
    """W[k+1] = a0 W[k] + a1 W[k-1] + a2 W[k-2] - lr u[k] (plain SGD while step < switch_step)."""
    if found_inf:
        return
    g = grad.detach().to(torch.float64)
    if grad_scale is not None:
        g = g / grad_scale
    if maximize:
        g = -g
    g = g + weight_decay * state.weight
    u = g
    if momentum != 0:
        if state.step == 0:
            state.momentum_buffer = g.clone()
        else:
            state.momentum_buffer = momentum * state.momentum_buffer + (1 - dampening) * g
        u = g + momentum * state.momentum_buffer if nesterov else state.momentum_buffer
    a0, a1, a2 = coefficients
    if state.step < switch_step:
        new = state.weight - lr * u
    else:
        new = a0 * state.weight + a1 * state.previous + a2 * state.before - lr * u
    state.before, state.previous, state.weight = state.previous, state.weight, new
    state.step += 1
