"""How far an 8-bit history may take a run from the float64 oracle, derived (never tuned).

A store of d as int8 codes with scale s = absmax / 127 (tmsgd_kernels/int8_history.py) errs by at
most e = s * (0.5 + 400 u), u = 2**-24 the fp32 unit roundoff: round to nearest gives half a code
step, the fp32 quotient x / s (|x / s| <= 127 (1 + u)) adds 127 u * 2 code steps at most (the
clamp only removes error), and decoding code * s rounds once more (127 u code steps).

The kernels read the stored d1, d2 and add the computed d_new to the weight. With stored values
off by e[j], the computed steps are off by eps[k + 1] = b1 (eps[k] + e[k]) + b2 (eps[k - 1] +
e[k - 1]) (the grads do not depend on the weights without weight decay, so u is unchanged), and
the weight by the sum of eps. For one unit error the impulse responses are g (of eps) and c (its
running sum, of the weight). A store is first read as d1 (then as d2), except the one made two
steps before the warm-up ends: the warm-up step after it reads nothing, so it enters once, as d2
(responses g', c'). With every |e[j]| <= E:

    |weight error| <= E * (sum_{n=1..K} |c_n| + max_n |c'_n|)      (K steps taken)
    |stored d - oracle d| <= E * (1 + sum_{n>=1} |g_n| + sum_{n>=1} |g'_n|)

For the paper's coefficients (b1 + b2 = 0) c_n decays to 0: storage errors wash out. The fp32
rounding of the same run is bounded as for an fp32 history (oracle.Tolerance) and added.

An 8-bit momentum buffer (momentum_dtype=torch.int8) errs by at most E_b per store (the same rule,
with the buffer's largest scale). A store error e at step 0 is read at step n >= 1 as m^n e in
the new buffer (m^(n+1) e in u with Nesterov), so it enters the steps as -lr times that, and the
history recursion carries it on (a warm-up step takes it without the recursion; every position
of the warm-up's end is tried and the largest response kept). With the responses h (of the
computed steps) and their running sums r (of the weight):

    |weight error|       += E_b * sum_{n=1..K} max |r_n|
    |stored d error|     += E_b * sum_n max |h_n|
    |buffer error|       += E_b * (1 + sum_{n>=1} m^n) = E_b / (1 - m)

Unlike the history's, these responses do not decay to zero in the weight: momentum passes a
buffer error on to every later step (|r_n| tends to lr m / ((1 - m)(1 - b1 - b2))).
"""

from __future__ import annotations

import torch
from oracle import Tolerance

UNIT_ROUNDOFF = 2.0 ** -24
STORE_ERROR_PER_SCALE = 0.5 + 400 * UNIT_ROUNDOFF


def impulse_response(b1: float, b2: float, steps: int, read_as_d1: bool = True) -> list[float]:
    """g_1 .. g_steps: the computed steps' errors after one unit error in the store at step 0,
    read as d1 by step 1 (unless `read_as_d1` is False: a warm-up step) and as d2 by step 2."""
    eps = [0.0] * (steps + 1)
    for k in range(steps):
        stored = eps[k] + (1.0 if k == 0 else 0.0)
        before = eps[k - 1] + (1.0 if k == 1 else 0.0) if k >= 1 else 0.0
        eps[k + 1] = (b1 * stored if k > 0 or read_as_d1 else 0.0) + b2 * before
    return eps[1:]


def buffer_impulse_response(b1: float, b2: float, momentum: float, nesterov: bool, lr: float,
                            steps: int, warmup_steps: int) -> list[float]:
    """h_1 .. h_steps: the computed steps' errors after one unit error in the buffer stored at
    step 0, when steps 1 .. warmup_steps are warm-up (SGD) steps."""
    eps = [0.0, 0.0]  # the errors of the two latest computed steps, the newest last
    response = []
    for n in range(1, steps + 1):
        direction = momentum ** (n + 1 if nesterov else n)
        new = -lr * direction
        if n > warmup_steps:
            new += b1 * eps[1] + b2 * eps[0]
        eps = [eps[1], new]
        response.append(new)
    return response


def _running_sums(values: list[float]) -> list[float]:
    sums, total = [], 0.0
    for value in values:
        total += value
        sums.append(total)
    return sums


class Int8Tolerance:
    """oracle.Tolerance's interface for a run whose history is int8 (fp32 d_new), without weight
    decay. `observe_scales` takes the largest block scale the implementation stored."""

    # Long enough for the sums of |g| to converge for zero-stable coefficients (the paper's
    # decay as 0.71**n), checked by `_converged`.
    HORIZON = 400

    def __init__(self, param_dtype: torch.dtype, b1: float, b2: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, *, buffer_codes: bool = False,
                 nesterov: bool = False, lr: float = 0.0, switch_step: int = 0) -> None:
        assert weight_decay == 0, "the bound assumes grads that do not depend on the weights"
        self.float_part = Tolerance(param_dtype, torch.float32, momentum)
        g = impulse_response(b1, b2, self.HORIZON)
        g_warm = impulse_response(b1, b2, self.HORIZON, read_as_d1=False)
        assert self._converged(g) and self._converged(g_warm), \
            f"the history recursion ({b1}, {b2}) does not decay"
        self.g_sum = sum(map(abs, g)) + sum(map(abs, g_warm))
        # c_partial[K]: sum of |c_n| for n <= K, plus the largest |c'_n|.
        c_warm = max(map(abs, _running_sums(g_warm)))
        self.c_partial = [c_warm, *(c_warm + s for s in _running_sums(
            [abs(c) for c in _running_sums(g)]))]
        self.max_scale = 0.0
        # An 8-bit momentum buffer (see the module docstring); all zero for a float buffer.
        self.buffer_codes = buffer_codes
        self.buffer_g_sum, self.buffer_c_partial, self.buffer_gain = 0.0, [0.0], 0.0
        if buffer_codes:
            assert momentum < 1
            responses = [buffer_impulse_response(b1, b2, momentum, nesterov, lr, self.HORIZON, w)
                         for w in range(switch_step + 1)]
            self.buffer_g_sum = sum(max(abs(h[n]) for h in responses)
                                    for n in range(self.HORIZON))
            sums = [_running_sums(h) for h in responses]
            self.buffer_c_partial = [0.0, *_running_sums(
                [max(abs(s[n]) for s in sums) for n in range(self.HORIZON)])]
            self.buffer_gain = 1.0 / (1.0 - momentum)
        self.max_buffer_scale = 0.0

    @staticmethod
    def _converged(g: list[float]) -> bool:
        return max(map(abs, g[-20:])) < 1e-12

    def observe(self, oracle) -> None:
        self.float_part.observe(oracle)

    def observe_scales(self, scales: list[torch.Tensor]) -> None:
        for s in scales:
            if s.numel():
                self.max_scale = max(self.max_scale, s.abs().max().item())

    def observe_buffer_scales(self, scales: list[torch.Tensor]) -> None:
        for s in scales:
            if s.numel():
                self.max_buffer_scale = max(self.max_buffer_scale, s.abs().max().item())

    @property
    def store_error(self) -> float:
        return self.max_scale * STORE_ERROR_PER_SCALE

    @property
    def buffer_store_error(self) -> float:
        return self.max_buffer_scale * STORE_ERROR_PER_SCALE

    def history(self) -> float:
        return (self.float_part.history() + self.store_error * (1 + self.g_sum)
                + self.buffer_store_error * self.buffer_g_sum)

    def weight(self, steps: int) -> float:
        c = self.c_partial[min(steps, self.HORIZON)]
        c_buffer = self.buffer_c_partial[min(steps, len(self.buffer_c_partial) - 1)]
        return (self.float_part.weight(steps) + self.store_error * c
                + self.buffer_store_error * c_buffer)

    def buffer(self, steps: int = 0) -> float:
        return self.float_part.buffer(steps) + self.buffer_store_error * self.buffer_gain
