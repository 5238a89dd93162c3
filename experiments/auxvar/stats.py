"""Paired statistics over seeds: runs that share a seed share the initial network, so each
comparison is on the per-seed differences. Paired t-test (the one Holm corrects), Wilcoxon
signed-rank (reported beside it), percentile bootstrap interval of the mean difference."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

LOSS_CAP = 1e6     # a diverged run scores as this loss: worst, but finite for the tests
LOSS_FLOOR = 1e-12


def score(loss: float) -> float:
    """log10 of the loss, clipped to [1e-12, 1e6]; nan and inf (diverged) become the cap."""
    if not math.isfinite(loss):
        return math.log10(LOSS_CAP)
    return math.log10(min(max(loss, LOSS_FLOOR), LOSS_CAP))


def bootstrap_mean_ci(d: np.ndarray, level: float = 0.95, n_boot: int = 10000,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``d`` (seeded, so reports reproduce)."""
    rng = np.random.default_rng(seed)
    means = rng.choice(d, size=(n_boot, len(d)), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired(challenger: list[float], baseline: list[float]) -> dict[str, Any]:
    """Compare per-seed scores (lower is better): d = challenger - baseline.

    Returns n, mean and sd of d, the ratio 10**mean (geometric-mean ratio of the losses), the
    bootstrap 95 % interval, the paired t-test and Wilcoxon p-values (two-sided), the standardized
    effect d_z = mean / sd, and how many seeds the challenger won.
    """
    a, b = np.asarray(challenger, float), np.asarray(baseline, float)
    if a.shape != b.shape or a.size < 2:
        raise ValueError("paired comparison needs two equal-length samples of at least 2")
    d = a - b
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        # identical differences: no variance to test against; equal runs are no difference
        p_t = 1.0 if mean == 0.0 else 0.0
        p_w = 1.0 if mean == 0.0 else float(2 * 0.5 ** d.size)
    else:
        p_t = float(stats.ttest_rel(a, b).pvalue)
        p_w = float(stats.wilcoxon(a, b).pvalue) if np.any(d != 0) else 1.0
    lo, hi = bootstrap_mean_ci(d)
    return {"n": int(d.size), "mean_diff": mean, "sd_diff": sd, "ratio": 10 ** mean,
            "ci_low": lo, "ci_high": hi, "p_t": p_t, "p_wilcoxon": p_w,
            "d_z": mean / sd if sd > 0 else math.copysign(math.inf, mean) if mean else 0.0,
            "wins": int((d < 0).sum()), "losses": int((d > 0).sum())}


def holm(pvalues: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error), in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
