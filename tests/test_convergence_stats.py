"""experiments.stats (paired statistics) against scipy and statsmodels as peers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from experiments.stats import (
    bootstrap_ci,
    compare_paired,
    holm,
    paired_power,
    paired_t,
    seeds_for_power,
    wilcoxon_exact,
)


@pytest.mark.parametrize("n", [3, 10, 13])
@pytest.mark.parametrize("shift", [0.0, 0.4])
def test_paired_t_matches_scipy_ttest_rel(n: int, shift: float) -> None:
    rng = np.random.default_rng(n)
    a, b = rng.normal(shift, 1, n), rng.normal(0, 1, n)
    t, p = paired_t(a - b)
    ref = sps.ttest_rel(a, b)
    assert t == pytest.approx(ref.statistic, rel=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-10)


@pytest.mark.parametrize("n", [5, 10, 13])
def test_wilcoxon_exact_matches_scipy(n: int) -> None:
    rng = np.random.default_rng(100 + n)
    d = rng.normal(0.3, 1, n)  # continuous: no ties, no zeros
    assert wilcoxon_exact(d) == pytest.approx(sps.wilcoxon(d, method="exact").pvalue, rel=1e-12)


def test_wilcoxon_all_one_sign_is_two_over_two_to_the_n() -> None:
    assert wilcoxon_exact(np.arange(1, 11)) == pytest.approx(2 / 2**10)


def test_holm_matches_statsmodels() -> None:
    p = list(np.random.default_rng(3).uniform(0, 0.08, 17)) + [1e-5, 0.9]
    ref = multipletests(p, alpha=0.05, method="holm")[1]
    np.testing.assert_allclose(holm(p), ref, rtol=1e-12)


def test_holm_skips_nan() -> None:
    out = holm([0.01, float("nan"), 0.02])
    assert np.isnan(out[1])
    np.testing.assert_allclose([out[0], out[2]], multipletests([0.01, 0.02], method="holm")[1])


@pytest.mark.parametrize("n,effect,alpha", [(10, 1.0, 0.05), (13, 1.5, 0.05 / 48), (20, 0.5, 0.01)])
def test_power_matches_statsmodels(n: int, effect: float, alpha: float) -> None:
    ref = TTestPower().power(effect_size=effect, nobs=n, alpha=alpha, alternative="two-sided")
    assert paired_power(n, effect, alpha) == pytest.approx(ref, rel=1e-8)


def test_seeds_for_power_is_the_smallest_n() -> None:
    n = seeds_for_power(1.0, 0.001, 0.8, minimum=3)
    assert paired_power(n, 1.0, 0.001) >= 0.8 > paired_power(n - 1, 1.0, 0.001)
    assert seeds_for_power(5.0, 0.05, 0.8, minimum=10) == 10  # the floor


def test_bootstrap_interval_matches_scipy_percentile_bootstrap() -> None:
    d = np.random.default_rng(7).normal(1.0, 2.0, 12)
    lo, hi = bootstrap_ci(d, resamples=20_000, seed=1)
    ref = sps.bootstrap((d,), np.mean, method="percentile", n_resamples=20_000,
                        random_state=np.random.default_rng(2)).confidence_interval
    se = d.std(ddof=1) / np.sqrt(len(d))
    # two Monte Carlo estimates of the same quantiles: they agree to a small part of the SE
    assert abs(lo - ref.low) < 0.1 * se and abs(hi - ref.high) < 0.1 * se


def test_compare_paired_orientation_and_counts() -> None:
    d = [0.5, 1.0, -0.2, 0.7, 0.3]
    r = compare_paired(d)
    assert r.n == 5 and r.wins == 4
    assert r.mean_diff == pytest.approx(np.mean(d))
    assert r.effect_dz == pytest.approx(np.mean(d) / np.std(d, ddof=1))
    assert r.p_t == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue)
    assert r.ci_low < r.mean_diff < r.ci_high
