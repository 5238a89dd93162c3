"""The GradScaler protocol and torch.compile."""

from __future__ import annotations

import copy

import torch
from oracle import OracleParam, oracle_step
from trajectory import assert_close, make_grads, make_params

from tmsgd_kernels import TMSGD


def _snapshot(params, optimizer):
    return [p.detach().clone() for p in params], copy.deepcopy(optimizer.state_dict()["state"])


def _assert_unchanged(params, optimizer, snapshot):
    weights, state = snapshot
    for p, w in zip(params, weights):
        assert torch.equal(p, w)
    now = optimizer.state_dict()["state"]
    assert now.keys() == state.keys()
    for index in state:
        for key in state[index]:
            assert torch.equal(now[index][key], state[index][key]), key


def test_grad_scaler_steps_unscaled_and_skips_overflow(backend, device):
    """Scaled grads are unscaled inside the step; an inf anywhere (the first step included)
    leaves params and all state untouched, and the scaler backs off."""
    params = make_params([(5,), (4097,)], torch.float32, device)
    optimizer = TMSGD(params, lr=0.05, momentum=0.9, backend=backend)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**10)
    oracles = [OracleParam(p) for p in params]
    for k, grads in enumerate(make_grads(params, 8)):
        overflow = k in (0, 4)
        loss = sum((p * g).sum() for p, g in zip(params, grads))
        if overflow:
            loss = loss + params[1][7] * float("inf")
        scaler.scale(loss).backward()
        snapshot = _snapshot(params, optimizer)
        scale_before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        if overflow:
            _assert_unchanged(params, optimizer, snapshot)
            assert scaler.get_scale() == scale_before / 2
            continue
        for o, g in zip(oracles, grads):
            oracle_step(o, g, lr=0.05, momentum=0.9)
        for p, o in zip(params, oracles):
            assert_close(p, o.weight, 1e-5, f"step {k}")


def test_compiled_step_equals_eager(backend, device):
    eager_params = make_params([(3,), (257,)], torch.float32, device)
    compiled_params = make_params([(3,), (257,)], torch.float32, device)
    options = {"lr": 0.05, "momentum": 0.9, "switch_step": 2, "backend": backend}
    eager = TMSGD(eager_params, **options)
    compiled = TMSGD(compiled_params, **options)
    compiled_step = torch.compile(compiled.step, fullgraph=True)
    for grads in make_grads(eager_params, 6):
        for a, b, g in zip(eager_params, compiled_params, grads):
            a.grad, b.grad = g.clone(), g.clone()
        eager.step()
        compiled_step()
    for a, b in zip(eager_params, compiled_params):
        # Inductor may fuse and contract differently from eager: a few float32 ulps.
        assert_close(b, a, 1e-6, "compiled vs eager")
    assert int(compiled.state_dict()["state"][0]["step"]) == 6


def test_grad_scaler_with_unscale_before_step(backend, device):
    """The clipping pattern: scaler.unscale_ first, then step with grad_scale unset."""
    (p,) = make_params([(9,)], torch.float32, device)
    optimizer = TMSGD([p], lr=0.05, backend=backend)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**8)
    oracle = OracleParam(p)
    for (g,) in make_grads([p], 4):
        scaler.scale((p * g).sum()).backward()
        scaler.unscale_(optimizer)
        unscaled = p.grad.clone()
        torch.nn.utils.clip_grad_norm_([p], max_norm=1e9)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        oracle_step(oracle, unscaled, lr=0.05)
    assert_close(p, oracle.weight, 1e-5, "unscale_ then step")
