"""Exact identities with torch.optim.SGD: coefficients (1, 0, 0) are plain SGD, and
(1 + m, -m, 0) are heavy-ball momentum m (W[k+1] - W[k] = m (W[k] - W[k-1]) - lr g)."""

from __future__ import annotations

import pytest
import torch
from trajectory import ODD_SHAPES, make_grads, make_params

from tmsgd_kernels import TMSGD

STEPS = 30


def _run_pair(ours_options, sgd_options, backend, device, dtype, switch_step=0):
    ours = make_params(ODD_SHAPES, dtype, device)
    theirs = make_params(ODD_SHAPES, dtype, device)
    grads = make_grads(ours, STEPS)
    ours_opt = TMSGD(ours, backend=backend, switch_step=switch_step, **ours_options)
    theirs_opt = torch.optim.SGD(theirs, foreach=False, **sgd_options)
    worst = 0.0
    for k in range(STEPS):
        for a, b, g in zip(ours, theirs, grads[k]):
            a.grad, b.grad = g.clone(), g.clone()
        ours_opt.step()
        theirs_opt.step()
        for a, b in zip(ours, theirs):
            if a.numel():
                worst = max(worst, (a.double() - b.double()).abs().max().item())
    return worst


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("direction", [{}, {"weight_decay": 0.1}, {"maximize": True},
                                       {"momentum": 0.9, "dampening": 0.1},
                                       {"momentum": 0.9, "nesterov": True}],
                         ids=["plain", "weight_decay", "maximize", "momentum", "nesterov"])
def test_unit_coefficients_are_sgd(backend, device, dtype, direction):
    """(1, 0, 0) with any direction option is torch.optim.SGD with the same options."""
    worst = _run_pair({"lr": 0.05, "coefficients": (1.0, 0.0, 0.0), **direction},
                      {"lr": 0.05, **direction}, backend, device, dtype)
    # The two differ only in rounding: SGD adds -lr*u to W directly, TM-SGD first forms
    # d = 0*d1 + 0*d2 - lr*u (exact) and then W + d; an FMA may round once where the other
    # rounds twice: at most one ulp of |W| (< 4 here) per step.
    assert worst <= STEPS * 4 * torch.finfo(dtype).eps


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("m", [0.5, 0.9])
def test_heavy_ball_coefficients_are_sgd_momentum(backend, device, dtype, m):
    """(1 + m, -m, 0) without a momentum buffer is SGD with momentum m, dampening 0."""
    worst = _run_pair({"lr": 0.05, "coefficients": (1 + m, -m, 0.0)},
                      {"lr": 0.05, "momentum": m}, backend, device, dtype)
    # Same trajectory, different association: SGD computes W - lr*(m*buf + g) and TM-SGD
    # W + (m*d1 - lr*g); differences of a few ulps of |d| each step, accumulated in W.
    assert worst <= STEPS * 4 * torch.finfo(dtype).eps


def test_warm_up_is_sgd(backend, device):
    """While step < switch_step the paper's coefficients are not used: plain SGD."""
    worst = _run_pair({"lr": 0.05}, {"lr": 0.05}, backend, device, torch.float64,
                      switch_step=STEPS)
    assert worst <= STEPS * 4 * torch.finfo(torch.float64).eps


def test_paper_coefficients_differ_from_sgd(backend, device):
    """The identities above are not vacuous: the paper's coefficients leave SGD's path."""
    worst = _run_pair({"lr": 0.05}, {"lr": 0.05}, backend, device, torch.float64)
    assert worst > 1e-3
