"""The test oracle: TM-SGD in the paper's form (eq. 8), float64, one parameter at a time, and the
one `Tolerance` an implementation is held to against it.

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


class Tolerance:
    """Worst-case error bounds after k steps, from the storage dtypes (never tuned to pass).

    Each step rounds W to the param dtype (half an ulp of |W|) and d_new to the history dtype
    (half an ulp of |d|). A history error decays through the zero-stable recursion (for the
    default coefficients its total gain is below 4), and every d error lands in W once. Momentum
    sums the errors of u with a total gain of at most 1 / (1 - momentum). The float64 oracle
    itself rounds at the size of W each step (a0 W + a1 W' + a2 W'', four terms), which matters
    only when the backend runs in float64 too.
    """

    ORACLE_EPS = torch.finfo(torch.float64).eps

    def __init__(self, param_dtype: torch.dtype, history_dtype: torch.dtype,
                 momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.eps_p = torch.finfo(param_dtype).eps
        self.eps_h = torch.finfo(history_dtype).eps
        self.gain_m = 1.0 / (1.0 - momentum) if momentum else 1.0
        self.weight_decay = weight_decay
        self.max_w = self.max_d = self.max_buf = 0.0

    def observe(self, oracle: list[OracleParam]) -> None:
        """Take the largest |W|, |d| and |buf| the oracle has reached into account."""
        for o in oracle:
            if o.weight.numel():
                self.max_w = max(self.max_w, o.weight.abs().max().item())
                self.max_d = max(self.max_d, o.d1.abs().max().item())
                if o.momentum_buffer is not None:
                    self.max_buf = max(self.max_buf, o.momentum_buffer.abs().max().item())

    def history(self) -> float:
        backend = 4 * self.gain_m * (self.eps_h + self.eps_p) * self.max_d
        return backend + 8 * self.ORACLE_EPS * self.max_w

    def weight(self, steps: int) -> float:
        return steps * (self.eps_p * self.max_w + self.history())

    def buffer(self, steps: int = 0) -> float:
        """The buffer's own rounding, plus what weight decay carries over: every step adds
        weight_decay * (the weight's error) to the buffer, which momentum sums with a total gain
        of at most 1 / (1 - momentum)."""
        own = 4 * self.gain_m * self.eps_p * self.max_buf + 8 * self.ORACLE_EPS * self.max_w
        return own + self.weight_decay * self.gain_m * self.weight(steps)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, what: str) -> None:
    """`actual` within `atol` of `expected` everywhere, compared in float64 on the CPU."""
    actual = actual.detach().to(torch.float64).cpu()
    expected = expected.detach().to(torch.float64).cpu()
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol, msg=lambda m: f"{what}: {m}")
