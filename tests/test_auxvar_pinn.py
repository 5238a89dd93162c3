"""FirstOrderPINNLoss (tmsgd_kernels/auxvar/pinn.py): the derivative auxiliaries against
torch.func.jvp and autograd, J = PINN loss at the forward pass, the bound with constant
max(2L - 2, L) on random networks and random auxiliaries, gradients, refused models."""

from __future__ import annotations

import pytest
import torch
from auxvar_helpers import mlp, one_thread  # noqa: F401  (one_thread: autouse fixture)
from torch import nn

from tmsgd_kernels.auxvar import FirstOrderPINNLoss, UnsupportedModelError

DT = torch.float64




def problem(depth: int, width: int = 6, n: int = 17, m: int = 9, seed: int = 0,
            weight_scale: float = 1.0, **kw) -> FirstOrderPINNLoss:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = mlp([2] + [width] * (depth - 1) + [1])
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(weight_scale)
    xi = torch.rand(n, 2, generator=g, dtype=DT)
    c = torch.randn(n, 2, generator=g, dtype=DT)          # a non-constant field c(x)
    f = torch.randn(n, 1, generator=g, dtype=DT)
    xb = torch.rand(m, 2, generator=g, dtype=DT)
    gb = torch.randn(m, 1, generator=g, dtype=DT)
    return FirstOrderPINNLoss(model, xi, c, f, xb, gb, **kw)


def perturb(loss: FirstOrderPINNLoss, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in loss.aux_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=DT))


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_derivative_auxiliaries_are_jvps_of_the_layers(depth: int) -> None:
    loss = problem(depth, seed=depth)
    for layer, v in enumerate(loss.v, start=1):
        sub = loss.model[:2 * layer]                   # Linear, Tanh pairs up to layer l
        _, jvp = torch.func.jvp(sub, (loss.interior,), (loss.velocity,))
        assert torch.allclose(v, jvp, rtol=1e-12, atol=1e-14)
    for layer, z in enumerate(loss.z, start=1):
        assert torch.allclose(z, loss.model[:2 * layer](loss.interior), rtol=1e-13, atol=1e-15)
    # the auxiliary PDE operator W_L v_{L-1} is c . grad phi by autograd
    r, q, rho, _ = loss.interior_residuals()
    op = loss.pde_operator(loss.interior, loss.velocity)
    assert torch.allclose(rho + loss.source, op, rtol=1e-12, atol=1e-14)
    assert all(float(t.abs().max()) < 1e-14 for t in r + q)


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("weights", ["adaptive", 3.0])
def test_J_equals_pinn_loss_at_forward_pass(depth: int, weights) -> None:
    loss = problem(depth, seed=10 + depth, weights=weights, boundary_weight=2.5)
    x = loss.interior.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss.model(x).sum(), x)
    expect = ((grad * loss.velocity).sum(1, keepdim=True) - loss.source).square().mean() \
        + 2.5 * (loss.model(loss.boundary) - loss.boundary_values).square().mean()
    assert float(loss()) == pytest.approx(float(expect), rel=1e-12)
    assert float(loss.pinn_loss()) == pytest.approx(float(expect), rel=1e-12)
    perturb(loss, 0.3, 1)
    if depth > 1:                                   # depth 1 has no auxiliaries to move
        assert float(loss()) != pytest.approx(float(expect), rel=1e-6)
    loss.reset_aux()
    assert float(loss()) == pytest.approx(float(expect), rel=1e-12)


@pytest.mark.parametrize("norm", ["fro", "spectral"])
def test_bound_holds_on_random_networks_and_auxiliaries(norm: str) -> None:
    worst = 0.0
    seed = 0
    for depth in (1, 2, 3, 4, 6):
        for aux_scale in (1e-3, 0.1, 3.0):
            for weight_scale in (0.5, 2.0):
                seed += 1
                loss = problem(depth, width=5, seed=seed, weight_scale=weight_scale, norm=norm)
                perturb(loss, aux_scale, seed)
                orig, bound = loss.bound()
                assert orig <= bound * (1 + 1e-12), (depth, aux_scale, weight_scale, orig, bound)
                if depth > 1:
                    worst = max(worst, orig / bound)
    assert 0.0 < worst < 1.0


def test_constant_counts_the_terms() -> None:
    assert [problem(d).bound_constant for d in (1, 2, 3, 5)] == [1, 2, 4, 8]


def test_per_point_weights_follow_the_recursion() -> None:
    """Depth 3: w^q_2 = ||W_3||^2, w^q_1 = ||W_3||^2 ||W_2||^2, and the value weight of r_1 is
    ||W_3||^2 K2^2 ||diag(W_2 v_1) W_2||_F^2 per point, written out by hand."""
    from tmsgd_kernels.auxvar.network import TANH_SECOND_DERIVATIVE_BOUND as K2
    loss = problem(3, seed=21)
    perturb(loss, 0.2, 2)
    _, _, _, wv = loss.interior_residuals()
    _, w_q, w_r = loss._weights(wv, "adaptive")
    W2, W3 = loss.model[2].weight, loss.model[4].weight
    a2, a3 = W2.square().sum(), W3.square().sum()
    assert w_q.tolist() == pytest.approx([float(a3 * a2), float(a3)], rel=1e-13)
    u = loss.v[0] @ W2.T                                     # (N, width)
    by_hand = a3 * K2 ** 2 * torch.stack([(torch.diag(ui) @ W2).square().sum() for ui in u])
    assert len(w_r) == 1 and torch.allclose(w_r[0], by_hand, rtol=1e-12)


@pytest.mark.parametrize("weight_grad", [False, True])
def test_gradients_reach_all_auxiliaries_and_match_finite_differences(weight_grad) -> None:
    loss = problem(4, width=4, n=5, m=3, seed=30, weight_grad=weight_grad)
    perturb(loss, 0.3, 3)
    params = list(loss.parameters())
    assert len(params) == len(loss.theta_parameters()) + len(loss.aux_parameters())
    grads = torch.autograd.grad(loss(), params)
    # with weights held fixed the finite difference must hold them fixed too
    frozen = None if weight_grad else loss._weights(loss.interior_residuals()[3], "adaptive")

    def value() -> float:
        if frozen is None:
            return float(loss())
        original = loss._weights
        loss._weights = lambda wv, w: frozen
        try:
            return float(loss())
        finally:
            loss._weights = original

    for p, g in zip(params, grads):
        assert float(g.abs().max()) > 1e-8
        idx = tuple(torch.randint(0, s, ()) for s in p.shape)
        eps = 1e-6
        with torch.no_grad():
            p[idx] += eps
            up = value()
            p[idx] -= 2 * eps
            down = value()
            p[idx] += eps
        assert float(g[idx]) == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-8)


def test_pinn_loss_trains_with_autograd_graph() -> None:
    loss = problem(3, seed=40)
    params = loss.theta_parameters()
    grads = torch.autograd.grad(loss.pinn_loss(), params)
    eps = 1e-6
    w = params[0]
    with torch.no_grad():
        w[0, 0] += eps
        up = float(loss.pinn_loss(create_graph=False))
        w[0, 0] -= 2 * eps
        down = float(loss.pinn_loss(create_graph=False))
        w[0, 0] += eps
    assert float(grads[0][0, 0]) == pytest.approx((up - down) / (2 * eps), rel=1e-6)


def test_refused() -> None:
    x, c, f = torch.rand(4, 2), torch.rand(4, 2), torch.rand(4, 1)
    relu = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    with pytest.raises(UnsupportedModelError, match="Tanh"):
        FirstOrderPINNLoss(relu, x, c, f, x, f)
    two_out = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    with pytest.raises(UnsupportedModelError, match="one output"):
        FirstOrderPINNLoss(two_out, x, c, f, x, f)
    ok = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    with pytest.raises(UnsupportedModelError, match="velocity"):
        FirstOrderPINNLoss(ok, x, c[:, :1], f, x, f)
    with pytest.raises(UnsupportedModelError, match="GELU"):
        FirstOrderPINNLoss(nn.Sequential(nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1)),
                           x, c, f, x, f)


@pytest.mark.parametrize("depth", [3, 4])
def test_bound_needs_the_value_weights(depth: int) -> None:
    """Adversarial case: interior values z far from the forward pass, derivative auxiliaries
    consistent with those wrong z (q = 0), f chosen so that rho = 0, boundary fitted exactly.
    Then J consists of the value residuals r alone, weighted by the per-point weights from the
    derivative auxiliaries; without them (K2 = 0) J would be 0 while the PINN loss is not."""
    loss = problem(depth, width=5, seed=50 + depth)
    g = torch.Generator().manual_seed(depth)
    with torch.no_grad():
        loss.boundary_values.copy_(loss.model(loss.boundary))
        v_prev = loss.velocity
        zs = [loss.interior, *loss.z]
        for i, (lay, rule) in enumerate(zip(loss.layers[:-1], loss.rules)):
            if i + 1 < len(zs):
                zs[i + 1].add_(2 * torch.randn(zs[i + 1].shape, generator=g, dtype=DT))
            v_prev = rule[0](lay.linear(zs[i])) * (v_prev @ lay.linear.weight.T)
            loss.v[i].copy_(v_prev)
        loss.source.copy_(v_prev @ loss.layers[-1].linear.weight.T)
    r, q, rho, _ = loss.interior_residuals()
    assert float(rho.abs().max()) < 1e-13 and all(float(t.abs().max()) < 1e-13 for t in q)
    orig, bound = loss.bound()
    assert orig > 1e-5                              # the wrong z leave a real residual
    assert orig <= bound * (1 + 1e-12)
