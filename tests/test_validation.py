"""Bad input gets a clear error, raised before anything is changed."""

from __future__ import annotations

import pytest
import torch
from trajectory import make_grads, make_params

from tmsgd_kernels import TMSGD
from tmsgd_kernels.coefficients import validate_coefficients


@pytest.mark.parametrize("options, message", [
    ({"lr": -0.1}, "learning rate"),
    ({"lr": float("nan")}, "lr must be finite"),
    ({"momentum": -0.5}, "momentum"),
    ({"dampening": 1.5}, "dampening"),
    ({"weight_decay": -1e-4}, "weight_decay"),
    ({"nesterov": True}, "Nesterov"),
    ({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "Nesterov"),
    ({"switch_step": -1}, "switch_step"),
    ({"switch_step": 2.5}, "switch_step"),
    ({"history_dtype": torch.int32}, "history_dtype"),
    ({"backend": "fortran"}, "unknown backend"),
    ({"coefficients": (1.5, -1.0)}, "three numbers"),
    ({"coefficients": (1.5, -1.0, 0.6)}, "sum to 1"),
    ({"coefficients": (2.0, -1.0, 0.0)}, "not zero-stable"),  # (z - 1)^2 z
    ({"coefficients": (3.0, -3.0, 1.0)}, "not zero-stable"),  # (z - 1)^3
    ({"coefficients": (-1.0, 1.0, 1.0)}, "not zero-stable"),  # (z - 1)(z + 1)^2
    ({"coefficients": (1.0, -1.5, 1.5)}, "not zero-stable"),  # roots +-1.22i outside the disk
    ({"coefficients": (1.0, 1.0, -1.0)}, "not zero-stable"),  # (z - 1)^2 (z + 1)
])
def test_invalid_hyperparameters_raise_at_construction(options, message):
    with pytest.raises(ValueError, match=message):
        TMSGD(make_params([(3,)], torch.float32, "cpu"), **options)


def test_invalid_param_group_is_not_added():
    optimizer = TMSGD(make_params([(3,)], torch.float32, "cpu"), lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        optimizer.add_param_group({"params": make_params([(2,)], torch.float32, "cpu"),
                                   "momentum": -1.0})
    assert len(optimizer.param_groups) == 1


@pytest.mark.parametrize("coefficients", [(1.0, 0.0, 0.0), (1.5, -1.0, 0.5), (1.9, -0.9, 0.0),
                                          (0.0, 0.0, 1.0), (1.0, 0.5, -0.5)])
def test_zero_stable_coefficients_are_accepted(coefficients):
    assert validate_coefficients(coefficients) == coefficients


def test_unavailable_backend_named_explicitly_says_why():
    with pytest.raises(RuntimeError, match="backend 'cuda' cannot run on cpu"):
        TMSGD(make_params([(3,)], torch.float32, "cpu"), backend="cuda")


def _set_sparse(p):
    p.grad = torch.zeros_like(p).to_sparse()


def _set_wrong_shape(p):  # autograd refuses such a grad; .data on it slips past that check
    p.grad = torch.zeros_like(p)
    p.grad.data = torch.zeros(p.numel() + 1, device=p.device)


def _set_wrong_dtype(p):
    p.grad_dtype = None  # lifts autograd's own dtype check
    p.grad = torch.zeros_like(p, dtype=torch.float64)


BAD_GRADS = {"sparse": _set_sparse, "shape": _set_wrong_shape, "dtype": _set_wrong_dtype}


@pytest.mark.parametrize("case", BAD_GRADS)
def test_bad_gradient_raises_before_any_change(backend, device, case):
    good, bad = make_params([(5,), (4,)], torch.float32, device)
    optimizer = TMSGD([good, bad], lr=0.1, momentum=0.9, backend=backend)
    grads = make_grads([good, bad], 3)
    good.grad, bad.grad = grads[0]
    optimizer.step()
    before = [good.detach().clone(), bad.detach().clone()], optimizer.state_dict()
    good.grad = grads[1][0]
    BAD_GRADS[case](bad)
    # The optimizer's own check (sparse) or the kernel's, which runs before it writes anything.
    with pytest.raises((RuntimeError, ValueError), match=r"sparse|shape|dtype|grads\[1\]"):
        optimizer.step()
    assert torch.equal(good, before[0][0]) and torch.equal(bad, before[0][1])
    for index, entry in optimizer.state_dict()["state"].items():
        for key, value in entry.items():
            assert torch.equal(value, before[1]["state"][index][key])


def test_integer_param_is_rejected_at_step():
    p = torch.zeros(3, dtype=torch.int64)
    optimizer = TMSGD([p], lr=0.1)
    p.grad = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="floating-point"):
        optimizer.step()


def _trained_optimizer(shapes=((3,), (4,))):
    params = make_params(shapes, torch.float32, "cpu")
    optimizer = TMSGD(params, lr=0.1, momentum=0.9)
    for p, g in zip(params, make_grads(params, 1)[0]):
        p.grad = g
    optimizer.step()
    return optimizer


@pytest.mark.parametrize("mutate, message", [
    (lambda sd: sd.pop("state"), "'state' and 'param_groups'"),
    (lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0])), "parameter groups"),
    (lambda sd: sd["param_groups"][0]["params"].pop(), "params in the loaded"),
    (lambda sd: sd["state"][0].pop("delta_odd"), "loads its own format"),
    (lambda sd: sd["state"][1].update(delta_odd=torch.zeros(5)), "has shape"),
    (lambda sd: sd["state"][0].update(momentum_buffer=torch.zeros(2, 2)), "has shape"),
    (lambda sd: sd["state"].update({7: sd["state"][0]}), "no parameter group lists"),
    (lambda sd: sd["param_groups"][0].update(coefficients=(2.0, -1.0, 0.0)), "zero-stable"),
], ids=["no_state", "groups", "params", "keys", "history_shape", "buffer_shape", "extra",
        "coefficients"])
def test_state_dict_that_does_not_fit_is_refused_unchanged(mutate, message):
    source = _trained_optimizer().state_dict()
    mutate(source)
    target = _trained_optimizer()
    before = target.state_dict()
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(source)
    after = target.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for index, entry in before["state"].items():
        for key, value in entry.items():
            assert torch.equal(after["state"][index][key], value)


def test_adam_state_dict_is_refused():
    """torch.optim.SGD checkpoints load (tests/test_load_state_dict.py); another optimizer's
    state is refused with a message that says what loads."""
    params = make_params([(3,)], torch.float32, "cpu")
    adam = torch.optim.Adam(params, lr=0.1)
    params[0].grad = torch.ones(3)
    adam.step()
    with pytest.raises(ValueError, match="TMSGD loads its own format"):
        TMSGD(params, lr=0.1).load_state_dict(adam.state_dict())
