"""TMSGD behaves like a torch.optim optimizer: groups, schedulers, missing grads, frozen and
complex params, closures."""

from __future__ import annotations

import inspect

import pytest
import torch
from oracle import OracleParam, oracle_step
from trajectory import assert_close, make_grads, make_params

from tmsgd_kernels import TMSGD

TIGHT = 1e-5  # float32 params over at most 20 steps of size ~0.05 (see trajectory.Tolerance)


def test_param_groups_use_their_own_hyperparameters(backend, device):
    a, b = make_params([(5,), (4097,)], torch.float32, device)
    groups = [{"params": [a], "lr": 0.1, "momentum": 0.9},
              {"params": [b], "weight_decay": 0.1, "switch_step": 3}]
    optimizer = TMSGD(groups, lr=0.02, backend=backend)
    oracles = [OracleParam(a), OracleParam(b)]
    options = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.02, "weight_decay": 0.1, "switch_step": 3}]
    for grads in make_grads([a, b], 15):
        a.grad, b.grad = grads
        optimizer.step()
        for o, g, opts in zip(oracles, grads, options):
            oracle_step(o, g, **opts)
    assert_close(a, oracles[0].weight, TIGHT, "group 0")
    assert_close(b, oracles[1].weight, TIGHT, "group 1")


def test_lr_scheduler_changes_the_step(backend, device):
    (p,) = make_params([(33,)], torch.float32, device)
    optimizer = TMSGD([p], lr=0.1, backend=backend)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    oracle = OracleParam(p)
    for k, (g,) in enumerate(make_grads([p], 20)):
        p.grad = g
        optimizer.step()
        scheduler.step()
        oracle_step(oracle, g, lr=0.1 * 0.5 ** (k // 4))
    assert_close(p, oracle.weight, TIGHT, "scheduled lr")


def test_params_without_grads_are_skipped(backend, device):
    """A frozen param (never a grad) is untouched and has no state; a param whose grad is None
    in some steps keeps its own step count and history across them."""
    frozen, sometimes, always = make_params([(3,), (10,), (10,)], torch.float32, device)
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    optimizer = TMSGD([frozen, sometimes, always], lr=0.05, momentum=0.5, backend=backend)
    oracles = {"sometimes": OracleParam(sometimes), "always": OracleParam(always)}
    for k, (_, g_some, g_always) in enumerate(make_grads([frozen, sometimes, always], 20)):
        has_grad = k % 3 != 2
        sometimes.grad = g_some if has_grad else None
        always.grad = g_always
        optimizer.step()
        if has_grad:
            oracle_step(oracles["sometimes"], g_some, lr=0.05, momentum=0.5)
        oracle_step(oracles["always"], g_always, lr=0.05, momentum=0.5)
    assert torch.equal(frozen, before)
    assert frozen not in optimizer.state
    assert_close(sometimes, oracles["sometimes"].weight, TIGHT, "param with missing grads")
    assert_close(always, oracles["always"].weight, TIGHT, "param with every grad")
    state = optimizer.state_dict()["state"]
    assert int(state[1]["step"]) == oracles["sometimes"].step == 14
    assert int(state[2]["step"]) == 20


def test_zero_grad_set_to_none_between_steps(backend, device):
    model = torch.nn.Linear(6, 3).to(device)
    optimizer = TMSGD(model.parameters(), lr=0.05, backend=backend)
    oracles = [OracleParam(p) for p in model.parameters()]
    x = torch.randn(8, 6, device=device)
    for _ in range(5):
        optimizer.zero_grad(set_to_none=True)
        model(x).square().sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        optimizer.step()
        for o, g in zip(oracles, grads):
            oracle_step(o, g, lr=0.05)
    for p, o in zip(model.parameters(), oracles):
        assert_close(p, o.weight, TIGHT, "after set_to_none zero_grad")


def test_complex_params_step_as_their_real_view(backend, device):
    z = torch.nn.Parameter(torch.randn(17, dtype=torch.complex64, device=device))
    (r,) = make_params([(17, 2)], torch.float32, device)
    with torch.no_grad():
        r.copy_(torch.view_as_real(z))
    complex_opt = TMSGD([z], lr=0.05, momentum=0.9, backend=backend)
    real_opt = TMSGD([r], lr=0.05, momentum=0.9, backend=backend)
    for (g,) in make_grads([r], 10):
        z.grad = torch.view_as_complex(g.clone())
        r.grad = g.clone()
        complex_opt.step()
        real_opt.step()
    assert torch.equal(torch.view_as_real(z), r)
    assert complex_opt.state_dict()["state"][0]["delta_even"].shape == (17, 2)


def test_non_contiguous_param(backend, device):
    base = torch.randn(6, 4, device=device)
    p = torch.nn.Parameter(base.t())  # a transposed (non-contiguous) param
    oracle = OracleParam(p)
    optimizer = TMSGD([p], lr=0.05, backend=backend)
    for (g,) in make_grads([p], 6):
        p.grad = g
        optimizer.step()
        oracle_step(oracle, g, lr=0.05)
    assert not p.is_contiguous()
    assert_close(p, oracle.weight, TIGHT, "non-contiguous param")


def test_closure_is_called_and_its_loss_returned(backend, device):
    (p,) = make_params([(4,)], torch.float32, device)
    optimizer = TMSGD([p], lr=0.1, backend=backend)

    def closure():
        optimizer.zero_grad()
        loss = p.square().sum()
        loss.backward()
        return loss

    expected = p.detach().square().sum()
    loss = optimizer.step(closure)
    assert torch.equal(loss.detach(), expected)
    assert_close(p, (1 - 0.2) * make_params([(4,)], torch.float32, device)[0], TIGHT, "closure")


def test_sgd_implementation_flags_map_or_refuse():
    """Code written for torch.optim.SGD passes foreach=, fused=, differentiable=: each maps to
    a backend or is refused with a message saying what to use, never a bare TypeError."""
    params = [torch.nn.Parameter(torch.randn(3))]
    assert TMSGD(params, foreach=True).param_groups[0]["backend"] == "torch"
    assert TMSGD(params, fused=False).param_groups[0]["backend"] == "torch"
    assert TMSGD(params, foreach=None, fused=None, differentiable=False).param_groups[0][
        "backend"] == "auto"
    with pytest.raises(ValueError, match="differentiable=True"):
        TMSGD(params, differentiable=True)
    with pytest.raises(ValueError, match="foreach=False"):
        TMSGD(params, foreach=False)
    with pytest.raises(ValueError, match="cannot both be True"):
        TMSGD(params, foreach=True, fused=True)
    with pytest.raises(ValueError, match="selects the torch backend"):
        TMSGD(params, foreach=True, backend="cpu")
    with pytest.raises(ValueError, match="needs a fused backend"):
        TMSGD(params, fused=True, backend="torch")


def test_fused_true_runs_a_fused_kernel_or_says_none_can(monkeypatch):
    from tmsgd_kernels import implementations, native_extension

    params = [torch.nn.Parameter(torch.randn(3))]
    if implementations.unavailable_reason("cpu", "cpu") is None:
        optimizer = TMSGD(params, lr=0.1, fused=True)
        params[0].grad = torch.ones(3)
        before = params[0].detach().clone()
        optimizer.step()
        torch.testing.assert_close(params[0], before - 0.1, rtol=0, atol=1e-7)
    monkeypatch.setattr(native_extension, "load_error", "the test says it is not built")
    monkeypatch.setattr(implementations, "_warned_fallback", {"cpu"})
    with pytest.raises(RuntimeError, match="no fused TM-SGD kernel can run on cpu"):
        TMSGD(params, fused=True)


def test_help_documents_every_argument():
    doc = TMSGD.__doc__
    for argument in inspect.signature(TMSGD.__init__).parameters:
        if argument != "self":
            assert f"    {argument}:" in doc, argument
    assert "lr * L < 1" in doc
