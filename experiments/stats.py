"""Paired statistics for seed-matched experiments, shared by the studies under experiments/.

Seed s gives both optimizers of a comparison the same initialization and batch order, so the
unit of analysis is the per-seed difference. This module holds the tests on those differences
(paired t, exact Wilcoxon signed-rank), a percentile bootstrap interval of their mean, Holm's
step-down correction over a declared family, and the power calculation that sizes the seeds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps


def paired_t(diffs: Sequence[float]) -> tuple[float, float]:
    """(t statistic, two-sided p) of the one-sample t-test of ``diffs`` against 0."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n < 2:
        return math.nan, math.nan
    sd = d.std(ddof=1)
    if sd == 0.0:
        # every seed moved by the same amount: no spread to test against
        return (math.copysign(math.inf, d.mean()), 0.0) if d.mean() != 0 else (math.nan, 1.0)
    t = d.mean() / (sd / math.sqrt(n))
    return float(t), float(2.0 * sps.t.sf(abs(t), n - 1))


def wilcoxon_exact(diffs: Sequence[float]) -> float:
    """Two-sided exact p of the Wilcoxon signed-rank test (zeros dropped, ties mid-ranked).

    Enumerates all 2^n sign patterns, so n is limited to 20; enough for seed counts.
    """
    d = np.asarray([x for x in diffs if x != 0.0], dtype=float)
    n = len(d)
    if n == 0:
        return 1.0
    if n > 20:
        raise ValueError("exact enumeration is limited to 20 non-zero differences")
    ranks = sps.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    centre = ranks.sum() / 2.0
    signs = np.array(list(itertools.product((0.0, 1.0), repeat=n)))
    w_plus = signs @ ranks
    # two-sided: patterns at least as far from the null centre as the observed one
    extreme = np.abs(w_plus - centre) >= abs(observed - centre) - 1e-9
    return float(extreme.mean())


def bootstrap_ci(
    diffs: Sequence[float], level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (seeds resampled with replacement)."""
    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given; NaN stays NaN, counted out)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(idx)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def paired_power(n: int, effect: float, alpha: float) -> float:
    """Power of the two-sided paired t-test with ``n`` pairs at standardized effect
    ``effect`` = mean difference / sd of differences (noncentral t)."""
    df = n - 1
    crit = sps.t.ppf(1.0 - alpha / 2.0, df)
    nc = effect * math.sqrt(n)
    power = float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))
    if math.isnan(power):
        # scipy's noncentral t gives NaN far in the tail (large nc); there the normal
        # approximation of the noncentral t is accurate (upper tail only: the lower is ~0)
        z = (crit * (1 - 1 / (4 * df)) - abs(nc)) / math.sqrt(1 + crit**2 / (2 * df))
        power = float(sps.norm.sf(z))
    return power


def seeds_for_power(
    effect: float, alpha: float, power: float = 0.8, minimum: int = 10, maximum: int = 100
) -> int:
    """Smallest n >= ``minimum`` pairs whose paired t-test reaches ``power``."""
    for n in range(max(minimum, 2), maximum + 1):
        if paired_power(n, effect, alpha) >= power:
            return n
    raise ValueError(f"power {power} not reached with {maximum} pairs")


@dataclass(frozen=True)
class PairedResult:
    """One comparison on matched seeds; ``diffs`` are oriented so positive = challenger better."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    effect_dz: float  # mean / sd of the differences
    wins: int  # seeds where the challenger is better
    t: float
    p_t: float
    p_wilcoxon: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def compare_paired(diffs: Sequence[float], bootstrap_seed: int = 0) -> PairedResult:
    """Every statistic of one comparison from its oriented per-seed differences."""
    d = np.asarray(diffs, dtype=float)
    sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
    t, p = paired_t(d)
    lo, hi = bootstrap_ci(d, seed=bootstrap_seed)
    return PairedResult(
        n=len(d),
        mean_diff=float(d.mean()) if len(d) else math.nan,
        ci_low=lo,
        ci_high=hi,
        effect_dz=float(d.mean() / sd) if sd and sd > 0 else math.nan,
        wins=int((d > 0).sum()),
        t=t,
        p_t=p,
        p_wilcoxon=wilcoxon_exact(d) if len(d) else math.nan,
    )
