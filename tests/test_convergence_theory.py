"""experiments.convergence.linear (the theory section) against closed forms and against the real
optimizers (TMSGD, torch.optim.SGD) run on the signals the theory describes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from experiments.convergence.linear import Rule, best_rate, stability_limit
from experiments.convergence.optimizers import CONFIGS, make_optimizer
from experiments.convergence.theory import measured_efold, measured_limit, rule_of

LINEAR = ["sgd", "tmsgd", "tmsgdm0.9", "nesterov0.9", "sgdm0.8", "ms_complex", "ms_lead_m"]


def _steps_under(name: str, grads: np.ndarray, lr: float = 0.1) -> np.ndarray:
    """The steps W[k+1] - W[k] the real optimizer takes for a given gradient sequence."""
    w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt, _ = make_optimizer(name, [w], lr, len(grads))
    out = []
    for g in grads:
        before = w.detach().clone()
        w.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(float(w.detach() - before))
    return np.asarray(out)


@pytest.mark.parametrize("name", LINEAR)
def test_impulse_response_is_what_the_optimizer_does(name: str) -> None:
    grads = np.zeros(40)
    grads[0] = 1.0
    steps = _steps_under(name, grads, lr=0.1)
    np.testing.assert_allclose(-steps / 0.1, rule_of(name).impulse(40), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("period", [2.0, 5.3, 17.0])
def test_gain_at_a_frequency_is_what_the_optimizer_does(name: str, period: float) -> None:
    omega = 2 * math.pi / period
    k = np.arange(1500)
    steps = -_steps_under(name, np.cos(omega * k), lr=0.1) / 0.1
    tail = slice(1000, None)  # transients of every rule here are gone by then
    basis = np.stack([np.cos(omega * k[tail]), np.sin(omega * k[tail])], 1)
    coef = np.linalg.lstsq(basis, steps[tail], rcond=None)[0]
    assert math.hypot(*coef) == pytest.approx(abs(rule_of(name).response(omega)), rel=1e-6)


@pytest.mark.parametrize("b1,b2", [(0.5, -0.5), (0.3, 0.3), (1.2, -0.4), (0.25, -0.25)])
def test_noise_gain_and_lead_closed_forms(b1: float, b2: float) -> None:
    r = Rule(b1, b2)
    # variance of an AR(2) process driven by unit white noise, divided by the squared DC gain
    var = (1 - b2) / ((1 + b2) * ((1 - b2) ** 2 - b1**2))
    assert r.noise_gain() == pytest.approx(var * (1 - b1 - b2) ** 2, rel=1e-9)
    # phase of 1 / (1 - b1 z^-1 - b2 z^-2) near omega = 0 is -omega (b1 + 2 b2) / (1 - b1 - b2)
    assert r.lead() == pytest.approx(-(b1 + 2 * b2) / (1 - b1 - b2), rel=1e-4, abs=1e-6)


def test_paper_filter_numbers() -> None:
    r = Rule(0.5, -0.5)
    assert abs(r.response(math.pi)) == pytest.approx(0.5)
    assert r.noise_gain() == pytest.approx(1.5)
    assert r.lead() == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("m", [0.0, 0.8, 0.9, 0.95])
def test_stability_limits_closed_forms(m: float) -> None:
    assert stability_limit(Rule(m=m)) == pytest.approx(2 * (1 + m), rel=1e-6)
    if m:
        nesterov = stability_limit(Rule(m=m, nesterov=True))
        assert nesterov == pytest.approx(2 * (1 + m) / (1 + 2 * m), rel=1e-6)
    assert stability_limit(Rule(0.5, -0.5)) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("name", ["tmsgd", "nesterov0.9"])
def test_measured_limit_agrees_with_theory(name: str) -> None:
    h = stability_limit(rule_of(name))
    assert measured_limit(name, h, steps=1500) == pytest.approx(h, rel=0.02)


def test_best_rate_closed_forms() -> None:
    kappa = 100.0
    lr, rate = best_rate(Rule(), kappa)  # SGD: lr 2 / (mu + L), rate (k - 1) / (k + 1)
    assert lr == pytest.approx(2 / (1 + 1 / kappa), rel=1e-3)
    assert rate == pytest.approx((kappa - 1) / (kappa + 1), rel=1e-4)
    m = ((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)) ** 2  # Polyak's heavy ball
    lr, rate = best_rate(Rule(m=m), kappa)
    assert lr == pytest.approx(4 / (1 + 1 / math.sqrt(kappa)) ** 2, rel=1e-2)
    assert rate == pytest.approx(math.sqrt(m), rel=1e-3)


@pytest.mark.parametrize("name", ["sgd", "tmsgd", "sgdm0.9"])
def test_measured_efold_agrees_with_theory(name: str) -> None:
    lr, rate = best_rate(rule_of(name), 100.0)
    theory = -1 / math.log(rate)
    assert measured_efold(name, lr, 100.0, steps=1500) == pytest.approx(theory, rel=0.05)


def test_every_multistep_candidate_is_valid_for_tmsgd() -> None:
    # TMSGD validates consistency and zero-stability on construction
    for name, cfg in CONFIGS.items():
        if cfg.rule == "multistep":
            make_optimizer(name, [torch.nn.Parameter(torch.zeros(2))], 0.1, 10)
            assert sum(cfg.coefficients) == pytest.approx(1.0)
