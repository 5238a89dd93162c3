"""AuxVarLoss (tmsgd_kernels/auxvar): the bound MSE <= L * J, J = MSE at the forward pass, the
gradients (against finite differences and against autograd on the network itself), stepping with
TMSGD, and refused models. All in float64 so that rounding cannot hide a violated bound."""

from __future__ import annotations

import itertools

import pytest
import torch
from auxvar_helpers import mlp, one_thread  # noqa: F401  (one_thread: autouse fixture)
from torch import nn

from tmsgd_kernels import TMSGD
from tmsgd_kernels.auxvar import AuxVarLoss, UnsupportedModelError

ACTIVATIONS = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus,
    "leaky": lambda: nn.LeakyReLU(-0.7), "hardtanh": nn.Hardtanh,
}




def problem(widths, act=nn.Tanh, n=23, seed=0, weight_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = mlp(widths, act)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(weight_scale)
    x = torch.randn(n, widths[0], generator=g, dtype=torch.float64)
    y = torch.randn(n, widths[-1], generator=g, dtype=torch.float64)
    return model, x, y


def perturb_aux(loss: AuxVarLoss, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for z in loss.aux:
            z.add_(scale * torch.randn(z.shape, generator=g, dtype=z.dtype))


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("norm", ["fro", "spectral"])
def test_bound_holds_on_random_networks_and_random_z(act: str, norm: str) -> None:
    worst = 0.0
    # every depth with every z scale; widths and weight scales cycle through their values
    cases = [(d, [1, 4, 13][i % 3], zs, [0.3, 1.0, 3.0][(i // 3) % 3]) for i, (d, zs) in
             enumerate(itertools.product([1, 2, 3, 5, 8], [1e-3, 1.0, 30.0]))]
    for seed, (depth, width, z_scale, w_scale) in enumerate(cases):
        widths = [3] + [width] * (depth - 1) + [2]
        model, x, y = problem(widths, ACTIVATIONS[act], seed=seed, weight_scale=w_scale)
        loss = AuxVarLoss(model, x, y, norm=norm)
        perturb_aux(loss, z_scale, seed)
        mse, bound = loss.bound()
        assert mse <= bound * (1 + 1e-12), (depth, width, z_scale, w_scale, mse, bound)
        if depth == 1:                 # no auxiliaries: J is the MSE itself
            assert mse == pytest.approx(bound, rel=1e-13)
        else:
            worst = max(worst, mse / bound)
    # random z are not the aligned worst case (next test), so no random case is tight
    assert worst < 1.0


@pytest.mark.parametrize("depth", [1, 2, 4, 7])
def test_constant_L_is_attained(depth: int) -> None:
    """Width-1 identity network, all weights 1: residuals of equal size and aligned signs make
    MSE = L * J exactly, so no constant below L works with these weights."""
    model = mlp([1] * (depth + 1), nn.Identity)
    with torch.no_grad():
        for lay in model:
            if isinstance(lay, nn.Linear):
                lay.weight.fill_(1.0)
                lay.bias.zero_()
    x = torch.zeros(1, 1, dtype=torch.float64)
    r = 0.25
    # z_l = l * r gives r_l = +r for l < L; y chosen so that r_L = z_{L-1} - y = -r
    y = torch.full((1, 1), (depth - 1) * r + r, dtype=torch.float64)
    loss = AuxVarLoss(model, x, y)
    with torch.no_grad():
        for i, z in enumerate(loss.aux, start=1):
            z.fill_(i * r)
    assert torch.allclose(loss.layer_terms(), torch.full((depth,), r * r, dtype=torch.float64))
    mse, bound = loss.bound()
    assert mse == pytest.approx((depth * r) ** 2, rel=1e-14)
    assert mse == pytest.approx(bound, rel=1e-14)


@pytest.mark.parametrize("act", ["tanh", "relu", "softplus"])
def test_J_equals_mse_at_forward_pass(act: str) -> None:
    model, x, y = problem([2, 7, 7, 7, 1], ACTIVATIONS[act], seed=3)
    loss = AuxVarLoss(model, x, y)
    direct = (model(x) - y).square().sum(dim=1).mean()
    assert float(loss()) == pytest.approx(float(direct), rel=1e-13)
    assert float(loss.mse()) == pytest.approx(float(direct), rel=1e-13)
    # after moving theta and z, reset_aux restores the equality at the new theta
    with torch.no_grad():
        for p in loss.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert float(loss()) != pytest.approx(float(loss.mse()), rel=1e-6)
    loss.reset_aux()
    assert float(loss()) == pytest.approx(float(loss.mse()), rel=1e-13)


def test_adaptive_weights_are_tail_products_of_norms() -> None:
    model, x, y = problem([2, 5, 6, 4, 1], seed=4)
    loss = AuxVarLoss(model, x, y)
    lin = [m for m in model if isinstance(m, nn.Linear)]
    fro = [float(m.weight.norm()) ** 2 for m in lin]
    expect = [fro[1] * fro[2] * fro[3], fro[2] * fro[3], fro[3]]
    assert loss.omegas().tolist() == pytest.approx(expect, rel=1e-13)
    spec = AuxVarLoss(model, x, y, norm="spectral").omegas()
    s = [float(torch.linalg.svdvals(m.weight)[0]) ** 2 for m in lin]
    assert spec.tolist() == pytest.approx([s[1] * s[2] * s[3], s[2] * s[3], s[3]], rel=1e-12)
    assert bool((spec <= loss.omegas() * (1 + 1e-12)).all())   # equal for the 1-row W_L


def test_gradient_at_forward_pass_is_the_networks_own() -> None:
    """At z = h(theta) all layer residuals vanish, so only W_L, b_L and z_{L-1} feel J, and their
    gradients are the MSE's: dMSE/dW_L, dMSE/db_L, and dMSE/dh_{L-1} (autograd on the network)."""
    model, x, y = problem([3, 6, 5, 2], seed=5)
    loss = AuxVarLoss(model, x, y)
    params = loss.theta_parameters() + loss.aux_parameters()
    grads = torch.autograd.grad(loss(), params)
    h = model[:-1](x).detach().requires_grad_(True)
    mse = (model[-1](h) - y).square().sum(dim=1).mean()
    g_w, g_b, g_h = torch.autograd.grad(mse, [model[-1].weight, model[-1].bias, h])
    assert torch.allclose(grads[-1], g_h, rtol=1e-12, atol=1e-15)
    assert torch.allclose(grads[4], g_w, rtol=1e-12, atol=1e-15)
    assert torch.allclose(grads[5], g_b, rtol=1e-12, atol=1e-15)
    for g in grads[:4] + grads[6:-1]:
        assert float(g.abs().max()) < 1e-14


@pytest.mark.parametrize("weight_grad", [False, True])
@pytest.mark.parametrize("weights", ["adaptive", 10.0])
def test_gradients_reach_theta_and_z_and_match_finite_differences(weight_grad, weights) -> None:
    model, x, y = problem([2, 4, 3, 1], seed=6, n=5)
    loss = AuxVarLoss(model, x, y, weights=weights, weight_grad=weight_grad)
    perturb_aux(loss, 0.5, 7)
    params = list(loss.parameters())
    assert len(params) == len(loss.theta_parameters()) + len(loss.aux_parameters())
    grads = torch.autograd.grad(loss(), params)
    omegas = loss.omegas().detach()
    for p, g in zip(params, grads):
        assert float(g.abs().max()) > 1e-6          # every parameter, z included, is reached
        idx = tuple(torch.randint(0, s, ()) for s in p.shape)
        eps = 1e-6
        vals = []
        for sign in (1, -1):
            with torch.no_grad():
                p[idx] += sign * eps
                # omega held fixed: the finite difference must not see omega move either
                vals.append(float(loss() if weight_grad or weights != "adaptive"
                                  else loss.layer_terms()[-1]
                                  + (omegas * loss.layer_terms()[:-1]).sum()))
                p[idx] -= sign * eps
        fd = (vals[0] - vals[1]) / (2 * eps)
        assert float(g[idx]) == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_weight_grad_changes_theta_gradient_only() -> None:
    model, x, y = problem([2, 4, 3, 1], seed=8)
    a = AuxVarLoss(model, x, y, weight_grad=False)
    b = AuxVarLoss(model, x, y, weight_grad=True)
    perturb_aux(a, 0.5, 9)
    with torch.no_grad():
        for za, zb in zip(a.aux, b.aux):
            zb.copy_(za)
    ga = torch.autograd.grad(a(), list(a.parameters()))
    gb = torch.autograd.grad(b(), list(b.parameters()))
    # the last hidden weight W_2 enters omega_1 = ||W_2||^2 ||W_3||^2: its gradient changes
    assert not torch.allclose(ga[2], gb[2])
    for g1, g2 in zip(ga[-2:], gb[-2:]):               # z gradients do not depend on it
        assert torch.allclose(g1, g2, rtol=1e-13)


def test_tmsgd_steps_theta_and_z() -> None:
    model, x, y = problem([1, 8, 8, 1], seed=10, n=32)
    loss = AuxVarLoss(model, x, y)
    perturb_aux(loss, 0.1, 11)
    opt = TMSGD(loss.parameters(), lr=1e-3, backend="torch")
    before = [p.detach().clone() for p in loss.parameters()]
    j0 = loss()
    j0.backward()
    grads = [p.grad.clone() for p in loss.parameters()]
    opt.step()
    # first step, zero history: plain gradient step on every parameter, z included
    for p, p0, g in zip(loss.parameters(), before, grads):
        assert torch.allclose(p.detach(), p0 - 1e-3 * g, rtol=1e-13, atol=1e-16)
    z = loss.aux[0]
    assert opt.state[z]["delta_even"].shape == z.shape == (32, 8)
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss()) < float(j0)


@pytest.mark.parametrize("model, why", [
    (nn.Sequential(nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1)), "GELU"),
    (nn.Sequential(nn.Linear(2, 3), nn.SiLU(), nn.Linear(3, 1)), "SiLU"),
    (nn.Sequential(nn.Linear(2, 3), nn.LeakyReLU(2.0), nn.Linear(3, 1)), "Lipschitz"),
    (nn.Sequential(nn.Linear(2, 3), nn.ELU(alpha=1.5), nn.Linear(3, 1)), "Lipschitz"),
    (nn.Sequential(nn.Linear(2, 3), nn.Dropout(), nn.Linear(3, 1)), "Dropout"),
    (nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.BatchNorm1d(3), nn.Linear(3, 1)), "BatchNorm"),
    (nn.Sequential(nn.Linear(2, 3), nn.Tanh()), "last module"),
    (nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(4, 1)), "do not chain"),
    (nn.Sequential(), "empty"),
    (nn.Linear(2, 1), "nn.Sequential"),
    (nn.Sequential(nn.Conv1d(2, 3, 1), nn.Linear(3, 1)), "Conv1d"),
])
def test_unsupported_models_are_refused(model: nn.Module, why: str) -> None:
    with pytest.raises(UnsupportedModelError, match=why):
        AuxVarLoss(model, torch.randn(4, 2), torch.randn(4, 1))


def test_bad_data_and_options_are_refused() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    with pytest.raises(UnsupportedModelError, match="inputs"):
        AuxVarLoss(model, torch.randn(4, 3), torch.randn(4, 1))
    with pytest.raises(UnsupportedModelError, match="targets"):
        AuxVarLoss(model, torch.randn(4, 2), torch.randn(4))
    with pytest.raises(ValueError, match="norm"):
        AuxVarLoss(model, torch.randn(4, 2), torch.randn(4, 1), norm="nuc")
    with pytest.raises(ValueError, match="weights"):
        AuxVarLoss(model, torch.randn(4, 2), torch.randn(4, 1), weights=-1.0)


def test_J_goes_below_mse_but_never_below_mse_over_L() -> None:
    """z = h(theta) is not a minimizer of J over z (the gradient at it is dMSE/dh_{L-1}), so
    min_z J < MSE unless that gradient vanishes: the minima are NOT equal in general; what holds
    is min J <= min MSE <= L min J. Descend in z alone (theta, hence the MSE, fixed)."""
    model, x, y = problem([1, 6, 6, 1], seed=12, n=40)
    loss = AuxVarLoss(model, x, y)
    mse = float(loss.mse())
    opt = torch.optim.SGD(loss.aux_parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        loss().backward()
        opt.step()
    j = float(loss())
    assert float(loss.mse()) == mse                     # theta untouched
    assert j < 0.99 * mse                               # J strictly below the MSE
    assert mse <= loss.bound_constant * j * (1 + 1e-12)
