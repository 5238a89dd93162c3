"""The GradScaler protocol and torch.compile."""

from __future__ import annotations

import copy

import pytest
import torch
from oracle import OracleParam, oracle_step
from trajectory import assert_close, make_grads, make_params

from tmsgd_kernels import TMSGD


def _snapshot(params, optimizer):
    return [p.detach().clone() for p in params], copy.deepcopy(optimizer.state_dict()["state"])


def _assert_unchanged(params, optimizer, snapshot):
    """No param and no state changed. A skipped first step inside the kernels (capturable=True)
    may have created the state it would have used: zero history and buffer, count 0, which is
    the same as having none (the next step starts from there)."""
    weights, state = snapshot
    for p, w in zip(params, weights):
        assert torch.equal(p, w)
    now = optimizer.state_dict()["state"]
    assert state.keys() <= now.keys()
    for index in now:
        for key, value in now[index].items():
            if index in state:
                assert torch.equal(value, state[index][key]), key
            else:
                assert not value.any(), f"new state {key} of param {index} is not zero"


@pytest.mark.parametrize("capturable", [False, True], ids=["scaler-unscales", "kernel-unscales"])
def test_grad_scaler_steps_unscaled_and_skips_overflow(backend, device, capturable):
    """Scaled grads are unscaled (by GradScaler, or with capturable=True inside the kernels);
    an inf anywhere (the first step included) leaves params and all state untouched, and the
    scaler backs off."""
    params = make_params([(5,), (4097,)], torch.float32, device)
    optimizer = TMSGD(params, lr=0.05, momentum=0.9, backend=backend, capturable=capturable)
    assert optimizer._step_supports_amp_scaling is capturable
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
    """torch.compile(opt.step, fullgraph=True) with a tensor lr that a schedule changes: the
    eager result, one graph, no recompile."""
    from torch._dynamo.testing import CompileCounter

    eager_params = make_params([(3,), (257,)], torch.float32, device)
    compiled_params = make_params([(3,), (257,)], torch.float32, device)
    options = {"momentum": 0.9, "switch_step": 2, "backend": backend}
    eager = TMSGD(eager_params, lr=0.05, **options)
    lr = torch.tensor(0.05, device=device)
    compiled = TMSGD(compiled_params, lr=lr, **options)
    counter = CompileCounter()
    torch._dynamo.reset()
    compiled_step = torch.compile(compiled.step, fullgraph=True, backend=counter)
    frames_before_lr_change = None
    for k, grads in enumerate(make_grads(eager_params, 7)):
        if k == 4:
            # By now every graph the step needs exists (the torch backend keeps one per history
            # slot it writes); the schedule's change of a tensor lr must not add one.
            frames_before_lr_change = counter.frame_count
            lr.fill_(0.02)
            eager.param_groups[0]["lr"] = 0.02
        for a, b, g in zip(eager_params, compiled_params, grads):
            a.grad, b.grad = g.clone(), g.clone()
        eager.step()
        compiled_step()
    assert counter.frame_count == frames_before_lr_change <= 2, (
        "a tensor lr change recompiled the step")
    for a, b in zip(eager_params, compiled_params):
        # The traced step may run the device-side formulation (torch backend) while eager runs
        # the host-side one: the same math in another order, a few roundings per step apart.
        bound = 7 * 4 * torch.finfo(torch.float32).eps * a.abs().max().item()
        assert_close(b, a, bound, "compiled vs eager")
    assert int(compiled.state_dict()["state"][0]["step"]) == 7


@pytest.mark.parametrize("capturable", [False, True], ids=["scaler-unscales", "kernel-unscales"])
def test_grad_scaler_with_unscale_before_step(backend, device, capturable):
    """The clipping pattern: scaler.unscale_ first, then clipping, then scaler.step."""
    (p,) = make_params([(9,)], torch.float32, device)
    optimizer = TMSGD([p], lr=0.05, backend=backend, capturable=capturable)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**8)
    oracle = OracleParam(p)
    for (g,) in make_grads([p], 4):
        scaler.scale((p * g).sum()).backward()
        scaler.unscale_(optimizer)
        unscaled = p.grad.clone()
        torch.nn.utils.clip_grad_norm_([p], max_norm=1.0)
        unscaled = p.grad.clone()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        oracle_step(oracle, unscaled, lr=0.05)
    assert_close(p, oracle.weight, 1e-5, "unscale_ then step")


def test_compiled_step_follows_counts_that_fall_apart(backend, device):
    """A param without a gradient for a step falls one count behind the others; a compiled step
    (whose torch-backend graphs write the one history slot the counts call for) must notice and
    keep matching the eager step, before, during and after."""
    shapes = [(33,), (33,), (33,)]
    eager_params = make_params(shapes, torch.float32, device)
    compiled_params = make_params(shapes, torch.float32, device)
    eager = TMSGD(eager_params, lr=0.05, momentum=0.5, backend=backend)
    compiled = TMSGD(compiled_params, lr=0.05, momentum=0.5, backend=backend)
    torch._dynamo.reset()
    compiled_step = torch.compile(compiled.step, fullgraph=True, backend="eager")
    for k, grads in enumerate(make_grads(eager_params, 12)):
        for i, (a, b, g) in enumerate(zip(eager_params, compiled_params, grads)):
            skipped = k == 5 and i == 2
            a.grad, b.grad = (None, None) if skipped else (g.clone(), g.clone())
        eager.step()
        compiled_step()
        for a, b in zip(eager_params, compiled_params):
            bound = (k + 1) * 4 * torch.finfo(torch.float32).eps * a.abs().max().item()
            assert_close(b, a, bound, f"step {k}")
    assert [int(s["step"]) for s in compiled.state.values()] == [12, 12, 11]


def test_compiled_step_refuses_a_count_edited_in_place():
    """The torch backend's compiled step writes the slot its host-side parity record names; a
    count edited in place behind the optimizer's back makes it raise, not step the wrong slot."""
    (p,) = make_params([(10,)], torch.float32, "cpu")
    optimizer = TMSGD([p], lr=0.1, backend="torch")
    torch._dynamo.reset()
    step = torch.compile(optimizer.step, fullgraph=True, backend="eager")
    for (g,) in make_grads([p], 3):
        p.grad = g
        step()
    optimizer.state[p]["step"].add_(1)
    # A compiled frame that raises does not restore the grad mode its torch.no_grad() set
    # (torch 2.13): the context manager puts it back for the tests that follow.
    with torch.enable_grad(), pytest.raises(RuntimeError, match="step count changed outside"):
        step()
    assert torch.is_grad_enabled()
