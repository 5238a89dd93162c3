"""The SGD family as linear systems: stability on a quadratic and filtering of the gradient.

Every rule here (SGD, heavy ball, Nesterov, TM-SGD and any (b1, b2) multistep rule, each with or
without momentum) is linear in the gradient. Two views follow (docs/DESIGN.md section 1):

* On f(w) = lam w^2 / 2 one step maps the state (w, d1, d2, v) linearly, v = lr * buffer; it is
  stable while the spectral radius of that map stays below 1, a function of h = lr * lam only.
* Step d as a filter of the gradient sequence g: D(z) = -lr T(z) G(z) with
  T(z) = P(z) / ((1 - b1 z^-1 - b2 z^-2)(1 - m z^-1)), P = 1, or 1 + m - m z^-1 for Nesterov.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rule:
    """A linear update rule: delta-form history (b1, b2), momentum m, Nesterov or not."""

    b1: float = 0.0
    b2: float = 0.0
    m: float = 0.0
    nesterov: bool = False

    def transition(self, h: float) -> np.ndarray:
        """One step's matrix on (w, d1, d2, v) for f = lam w^2 / 2, h = lr * lam."""
        m = self.m
        v_new = np.array([h, 0.0, 0.0, m])  # v' = m v + h w
        # lr * u: the buffer, or with Nesterov h w + m v'
        lr_u = np.array([h, 0.0, 0.0, 0.0]) + m * v_new if self.nesterov else v_new
        d_new = np.array([0.0, self.b1, self.b2, 0.0]) - lr_u
        w_new = np.array([1.0, 0.0, 0.0, 0.0]) + d_new
        return np.stack([w_new, d_new, np.array([0.0, 1.0, 0.0, 0.0]), v_new])

    def radius(self, h: float) -> float:
        return float(np.abs(np.linalg.eigvals(self.transition(h))).max())

    def numerator(self) -> np.ndarray:
        """P(z) as coefficients of z^0, z^-1, ..."""
        return np.array([1.0 + self.m, -self.m]) if self.nesterov else np.array([1.0])

    def denominator(self) -> np.ndarray:
        """(1 - b1 z^-1 - b2 z^-2)(1 - m z^-1) as coefficients of z^0, z^-1, ..."""
        return np.convolve([1.0, -self.b1, -self.b2], [1.0, -self.m])

    def response(self, omega: np.ndarray | float) -> np.ndarray:
        """T(e^{i omega}), the gain from gradient to (minus) step per unit lr."""
        z1 = np.exp(-1j * np.asarray(omega, dtype=float))
        num = np.polyval(self.numerator()[::-1], z1)
        den = np.polyval(self.denominator()[::-1], z1)
        return num / den

    def dc_gain(self) -> float:
        """T(1): the steady step per unit lr under a constant gradient (the effective lr factor)."""
        return float(self.numerator().sum() / self.denominator().sum())

    def impulse(self, n: int) -> np.ndarray:
        """First ``n`` terms of the impulse response of T (minus the steps after one unit
        gradient at step 0, lr = 1)."""
        num, den = self.numerator(), self.denominator()
        out = np.zeros(n)
        for k in range(n):
            acc = num[k] if k < len(num) else 0.0
            for j in range(1, min(k, len(den) - 1) + 1):
                acc -= den[j] * out[k - j]
            out[k] = acc
        return out

    def noise_gain(self, n: int = 20_000) -> float:
        """White-noise power of the steps relative to SGD at equal effective lr:
        sum of t_k^2 / T(1)^2 (1 for SGD)."""
        return float((self.impulse(n) ** 2).sum() / self.dc_gain() ** 2)

    def lead(self, eps: float = 1e-5) -> float:
        """Look-ahead in steps at low frequency: minus the group delay of T at omega -> 0
        (positive: the step anticipates a slowly changing gradient)."""
        phase = np.angle(self.response(np.array([eps, 2 * eps])))
        return float((phase[1] - phase[0]) / eps)


def stability_limit(rule: Rule, hi: float = 20.0, iters: int = 80) -> float:
    """Largest h = lr * lam with spectral radius <= 1 on [0, h], by a scan then bisection
    (the radius need not be monotone in h, so the first crossing is bracketed first)."""
    hs = np.linspace(1e-6, hi, 4000)
    bad = [h for h in hs if rule.radius(h) > 1.0 + 1e-12]
    if not bad:
        return hi
    hi_b = bad[0]
    lo_b = hs[max(0, int(np.searchsorted(hs, hi_b)) - 1)]
    for _ in range(iters):
        mid = 0.5 * (lo_b + hi_b)
        lo_b, hi_b = (mid, hi_b) if rule.radius(mid) <= 1.0 + 1e-12 else (lo_b, mid)
    return float(lo_b)


def worst_rate(rule: Rule, lr: float, lams: np.ndarray) -> float:
    """Worst spectral radius over the curvatures ``lams`` at learning rate ``lr``."""
    return max(rule.radius(lr * lam) for lam in lams)


def best_rate(rule: Rule, kappa: float, n_lams: int = 60) -> tuple[float, float]:
    """(best lr, its worst-case radius) on a quadratic with curvatures in [1 / kappa, 1]."""
    lams = np.geomspace(1.0 / kappa, 1.0, n_lams)
    hmax = stability_limit(rule)
    lrs = np.geomspace(hmax * 1e-3, hmax, 120)
    rates = [worst_rate(rule, lr, lams) for lr in lrs]
    i = int(np.argmin(rates))
    lo, hi = lrs[max(0, i - 1)], lrs[min(len(lrs) - 1, i + 1)]
    for _ in range(40):  # golden-section refinement in log lr
        a = math.exp(math.log(lo) + 0.382 * (math.log(hi) - math.log(lo)))
        b = math.exp(math.log(lo) + 0.618 * (math.log(hi) - math.log(lo)))
        if worst_rate(rule, a, lams) <= worst_rate(rule, b, lams):
            hi = b
        else:
            lo = a
    lr = math.sqrt(lo * hi)
    return lr, worst_rate(rule, lr, lams)


def efold_iterations(radius: float) -> float:
    """Iterations for the error to shrink by a factor e at per-step rate ``radius``."""
    return math.inf if radius >= 1.0 else -1.0 / math.log(radius)
