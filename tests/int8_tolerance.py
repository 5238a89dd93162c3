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
                 weight_decay: float = 0.0) -> None:
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

    @staticmethod
    def _converged(g: list[float]) -> bool:
        return max(map(abs, g[-20:])) < 1e-12

    def observe(self, oracle) -> None:
        self.float_part.observe(oracle)

    def observe_scales(self, scales: list[torch.Tensor]) -> None:
        for s in scales:
            if s.numel():
                self.max_scale = max(self.max_scale, s.abs().max().item())

    @property
    def store_error(self) -> float:
        return self.max_scale * STORE_ERROR_PER_SCALE

    def history(self) -> float:
        return self.float_part.history() + self.store_error * (1 + self.g_sum)

    def weight(self, steps: int) -> float:
        c = self.c_partial[min(steps, self.HORIZON)]
        return self.float_part.weight(steps) + self.store_error * c

    def buffer(self, steps: int = 0) -> float:
        return self.float_part.buffer(steps)
