"""The functional form, for users who keep their own state."""

from __future__ import annotations

import pytest
import torch
from oracle import OracleParam, oracle_step
from trajectory import ODD_SHAPES, assert_close, make_grads, make_params

from tmsgd_kernels import TMSGD
from tmsgd_kernels.functional import init_state, tmsgd


def test_functional_equals_optimizer(backend, device):
    ours = [p.detach() for p in make_params(ODD_SHAPES, torch.float32, device)]
    theirs = make_params(ODD_SHAPES, torch.float32, device)
    state = init_state(ours, momentum=0.9)
    optimizer = TMSGD(theirs, lr=0.05, momentum=0.9, switch_step=2, backend=backend)
    oracles = [OracleParam(p) for p in ours]
    for grads in make_grads(ours, 10):
        tmsgd(ours, grads, **state, lr=0.05, momentum=0.9, switch_step=2, backend=backend)
        for p, g in zip(theirs, grads):
            p.grad = g
        optimizer.step()
        for o, g in zip(oracles, grads):
            oracle_step(o, g, lr=0.05, momentum=0.9, switch_step=2)
    assert [int(s) for s in state["steps"]] == [10] * len(ours)
    for a, b, o in zip(ours, theirs, oracles):
        assert torch.equal(a, b)
        assert_close(a, o.weight, 1e-5, "functional vs oracle")


def test_init_state_of_no_params_is_empty():
    assert init_state([], momentum=0.9) == {
        "delta_even": [], "delta_odd": [], "momentum_buffers": [], "steps": []}


def test_functional_checks_its_state():
    params = make_params([(3,)], torch.float32, "cpu")
    state = init_state(params)
    grads = [torch.ones(3)]
    with pytest.raises(ValueError, match="one length"):
        tmsgd(params, grads, **{**state, "steps": []}, lr=0.1)
    with pytest.raises(ValueError, match="momentum_buffers needs one tensor per param"):
        tmsgd(params, grads, **state, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="sum to 1"):
        tmsgd(params, grads, **state, lr=0.1, coefficients=(1.0, 1.0, 1.0))
    overlapping = torch.zeros(4)
    with pytest.raises(ValueError, match="share memory"):
        tmsgd([overlapping[:3], overlapping[1:]], [torch.ones(3)] * 2,
              **init_state([overlapping[:3], overlapping[1:]]), lr=0.1)
