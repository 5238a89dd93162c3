"""Largest stable learning rate: theory and measurement on a quadratic, measurement on the CNN.

On f(w) = 0.5 * sum_i lam_i w_i^2 every optimizer of the SGD family is a linear recurrence in
h = lr * lam, stable while the spectral radius of its transition matrix stays below 1. Theory
(delta form of docs/DESIGN.md section 1): SGD h < 2, SGD-M(m) h < 2 (1 + m), TM-SGD (1.5, -1, 0.5)
h < 1. Measurement: the real optimizers, full-batch gradient, bisection on lr.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .optimizers import MOMENTUM, make_optimizer
from .spec import RunSpec

SGD_FAMILY = ("sgd", "tmsgd", "sgdm", "tmsgdm")
CURVATURE_L = 10.0  # the largest curvature of the test quadratic


def transition_matrix(opt: str, h: float) -> np.ndarray:
    """The linear map of state (w, d1, d2, v) for one step on f = 0.5 * lam * w^2, h = lr * lam.

    v = lr * momentum buffer; d1, d2 the last two steps (docs/DESIGN.md section 1:
    d_new = b1 d1 + b2 d2 - lr u).
    """
    m = MOMENTUM if opt in ("sgdm", "tmsgdm") else 0.0
    b1, b2 = (0.5, -0.5) if opt in ("tmsgd", "tmsgdm") else (0.0, 0.0)
    v_new = np.array([h, 0.0, 0.0, m])  # v' = m v + h w (lr * gradient)
    d_new = np.array([0.0, b1, b2, 0.0]) - v_new
    w_new = np.array([1.0, 0.0, 0.0, 0.0]) + d_new
    return np.stack([w_new, d_new, np.array([0.0, 1.0, 0.0, 0.0]), v_new])


def spectral_radius(opt: str, h: float) -> float:
    return float(np.abs(np.linalg.eigvals(transition_matrix(opt, h))).max())


def theory_limit(opt: str, lo: float = 1e-6, hi: float = 10.0, iters: int = 80) -> float:
    """Largest h = lr * L with spectral radius <= 1 (bisection; radius grows with h here)."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if spectral_radius(opt, mid) <= 1.0 + 1e-12 else (lo, mid)
    return lo


def _quadratic_stable(opt: str, lr: float, steps: int, seed: int = 0) -> bool:
    gen = torch.Generator().manual_seed(seed)
    lam = torch.linspace(0.01, 1.0, 50, dtype=torch.float64) * CURVATURE_L
    w = torch.nn.Parameter(torch.randn(50, generator=gen, dtype=torch.float64))
    start = float(w.detach().norm())
    o = make_optimizer(opt, [w], lr)
    for _ in range(steps):
        w.grad = lam * w.detach()
        o.step()
        norm = float(w.detach().norm())
        if not math.isfinite(norm) or norm > 1e6 * start:
            return False
    return float(w.detach().norm()) < start


def bisect_lr(stable: Any, lo: float, hi: float, iters: int) -> float:
    """Largest lr in [lo, hi] with ``stable(lr)`` true, by bisection in log space."""
    if not stable(lo):
        return float("nan")
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if stable(mid) else (lo, mid)
    return lo


def quadratic_job(job: tuple[str, int]) -> dict[str, Any]:
    """Measured and theoretical largest stable lr * L on the quadratic for one optimizer."""
    opt, steps = job
    measured = bisect_lr(lambda lr: _quadratic_stable(opt, lr, steps), 1e-4, 1.0, 40)
    return {
        "kind": "quadratic",
        "optimizer": opt,
        "L": CURVATURE_L,
        "steps": steps,
        "measured_lrL": measured * CURVATURE_L,
        "theory_lrL": theory_limit(opt),
    }


CNN_CRITERIA = ("finite", "trains")


def cnn_job(job: tuple[str, int, int, int, str]) -> dict[str, Any]:
    """Largest lr (bisection in log lr over [1e-2, 1e2]) at which the digits CNN, trained ``steps``
    steps, stays finite (criterion "finite": no inf/nan loss) or also ends with a training loss
    below its initial loss (criterion "trains")."""
    from .tasks import get_task

    torch.set_num_threads(1)
    opt, seed, steps, iters, criterion = job
    task = get_task("digits_cnn")
    trials: list[dict[str, Any]] = []

    def stable(lr: float) -> bool:
        rec = task.run(RunSpec("digits_cnn", opt, lr, seed, steps, "val", phase="stability"))
        losses = rec["curves"]["train_loss"]
        ok = not rec["diverged"] and (criterion == "finite" or losses[-1] < losses[0])
        trials.append({"lr": lr, "stable": ok, "final_train_loss": losses[-1]})
        return ok

    lr_max = bisect_lr(stable, 1e-2, 1e2, iters)
    return {"kind": "cnn", "optimizer": opt, "seed": seed, "steps": steps,
            "criterion": criterion, "lr_max": lr_max, "trials": trials}
