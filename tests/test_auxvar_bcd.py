"""The block-coordinate solver of the auxiliary-variable loss (experiments/auxvar/bcd.py): every
block update leaves J_omega (omega fixed through a sweep) no larger, the closed-form blocks are
the exact minimisers (against torch.linalg.lstsq on the stacked least-squares systems and a zero
gradient), and its FLOP count is what torch's flop counter sees plus the factorizations."""

from __future__ import annotations

import pytest
import torch
from auxvar_helpers import mlp, one_thread  # noqa: F401  (autouse fixture)
from torch.utils.flop_counter import FlopCounterMode

from experiments.auxvar.bcd import BlockCoordinateSolver, proximal_lstsq
from tmsgd_kernels.auxvar import AuxVarLoss


def small_problem(depth: int = 4, seed: int = 0) -> AuxVarLoss:
    torch.manual_seed(seed)
    x = torch.linspace(-1, 1, 32, dtype=torch.float64).unsqueeze(1)
    y = torch.cat([torch.sin(3 * x), torch.cos(2 * x)], dim=1)  # two outputs: d_out > 1
    return AuxVarLoss(mlp([1] + [8] * (depth - 1) + [2]), x, y)


@pytest.mark.parametrize("depth", [3, 5])
def test_every_block_update_decreases_j_omega(depth: int) -> None:
    loss = small_problem(depth)
    start = float(loss().detach())  # J at the forward pass = the network's MSE
    solver = BlockCoordinateSolver(loss, rho=1e-3)
    moved = 0
    for _ in range(15):
        trace: list[float] = []
        solver.sweep(trace)
        # the start, W_L, z_{L-1}, then W_l for l = L-1..1 and z_{l-1} for l = L-1..2
        assert len(trace) == 1 + 2 + (depth - 1) + (depth - 2)
        for before, after in zip(trace, trace[1:]):
            assert after <= before * (1 + 1e-12)
            moved += after < before * (1 - 1e-9)
    assert moved > 15 * depth  # most blocks make real progress, not just "no increase"
    # omega's update between sweeps may raise J, but over the sweeps J falls well below its start
    assert float(loss().detach()) < 0.5 * start


def test_output_layer_block_is_the_exact_proximal_least_squares_minimiser() -> None:
    loss = small_problem()
    solver = BlockCoordinateSolver(loss, rho=0.3)
    for _ in range(2):  # away from the forward pass, so z_{L-1} is not the network's value
        solver.sweep()
    lin = loss.layers[-1].linear
    z = loss.aux[-1].detach()
    old = torch.cat([lin.weight.mT, lin.bias.unsqueeze(0)]).clone()
    solver.solve_output_layer()
    a = torch.cat([z, torch.ones_like(z[:, :1])], dim=1)
    m, n = a.shape
    stacked_a = torch.cat([a / m**0.5, 0.3**0.5 * torch.eye(n, dtype=a.dtype)])
    stacked_b = torch.cat([loss.targets / m**0.5, 0.3**0.5 * old])
    ref = torch.linalg.lstsq(stacked_a, stacked_b, driver="gelsd").solution
    got = torch.cat([lin.weight.mT, lin.bias.unsqueeze(0)])
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-11)
    # first-order optimality of the block's objective, by autograd
    x = got.clone().requires_grad_(True)
    f = (a @ x - loss.targets).square().sum(1).mean() + 0.3 * (x - old).square().sum()
    (g,) = torch.autograd.grad(f, x)
    assert float(g.abs().max()) < 1e-10


def test_last_auxiliary_block_is_the_exact_minimiser() -> None:
    loss = small_problem()
    solver = BlockCoordinateSolver(loss, rho=1e-2)
    solver.sweep()
    solver.omega = loss.omegas().detach().clone()
    solver.solve_last_aux()
    w, b = loss.layers[-1].linear.weight, loss.layers[-1].linear.bias
    hid = loss.layers[-2]
    s = hid.activation(hid.linear(loss.aux[-2])).detach()
    om = float(solver.omega[-1])
    # min |Z W^T - (Y - b)|^2 + om |Z - S|^2  <=>  Z [W^T, sqrt(om) I] = [Y - b, sqrt(om) S]
    width = w.shape[1]
    m = torch.cat([w.mT, om**0.5 * torch.eye(width, dtype=w.dtype)], dim=1)
    rhs = torch.cat([loss.targets - b, om**0.5 * s], dim=1)
    ref = torch.linalg.lstsq(m.mT, rhs.mT, driver="gelsd").solution.mT
    torch.testing.assert_close(loss.aux[-1].detach(), ref, rtol=1e-9, atol=1e-11)
    z = loss.aux[-1].detach().clone().requires_grad_(True)
    f = (z @ w.mT + b - loss.targets).square().sum() + om * (z - s).square().sum()
    (g,) = torch.autograd.grad(f, z)
    assert float(g.abs().max()) < 1e-9 * max(1.0, om)


def test_proximal_lstsq_tends_to_plain_least_squares() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 5, generator=g, dtype=torch.float64)
    b = torch.randn(40, 2, generator=g, dtype=torch.float64)
    x = proximal_lstsq(a, b, torch.zeros(5, 2, dtype=torch.float64), 1e-12)
    torch.testing.assert_close(x, torch.linalg.lstsq(a, b).solution, rtol=1e-8, atol=1e-10)


def test_flop_count_matches_torch_flop_counter() -> None:
    """Matrix products counted as torch counts them (forwards, backward passes, backtracking
    evaluations); only the factorizations and triangular solves are added on top."""
    loss = small_problem(5)
    solver = BlockCoordinateSolver(loss, rho=1e-2)
    solver.sweep()
    before, before_linalg = solver.flops, solver.flops_linalg
    with FlopCounterMode(display=False) as counter:
        solver.sweep()
    seen = solver.flops - before - (solver.flops_linalg - before_linalg)
    assert seen == pytest.approx(counter.get_total_flops(), rel=1e-12)
    assert solver.flops_linalg > before_linalg > 0


def test_bad_settings_are_refused() -> None:
    x = torch.zeros(4, 1, dtype=torch.float64)
    fixed = AuxVarLoss(mlp([1, 3, 1]), x, x, weights=10.0)
    with pytest.raises(ValueError, match="adaptive"):
        BlockCoordinateSolver(fixed, rho=1e-2)
    with pytest.raises(ValueError, match="rho"):
        BlockCoordinateSolver(small_problem(), rho=0.0)
    with pytest.raises(ValueError, match="eta"):
        BlockCoordinateSolver(small_problem(), rho=1e-2, eta=-1.0)
