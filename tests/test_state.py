"""state_dict, resume, copies and serialization."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from oracle import OracleParam, oracle_step
from trajectory import ODD_SHAPES, assert_close, make_grads, make_params

from tmsgd_kernels import TMSGD

OPTIONS = {"lr": 0.05, "momentum": 0.9, "switch_step": 2}


def _train(params, optimizer, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        optimizer.step()


def test_state_dict_is_canonical(backend, device):
    params = make_params(ODD_SHAPES, torch.float64, device)
    optimizer = TMSGD(params, backend=backend, **OPTIONS)
    oracles = [OracleParam(p) for p in params]
    grads = make_grads(params, 7)
    _train(params, optimizer, grads)
    for step_grads in grads:
        for o, g in zip(oracles, step_grads):
            oracle_step(o, g, **OPTIONS)
    saved = optimizer.state_dict()
    assert list(saved["state"]) == list(range(len(params)))
    for index, o in enumerate(oracles):
        entry = saved["state"][index]
        assert set(entry) == {"step", "delta_even", "delta_odd", "momentum_buffer"}
        assert entry["step"].dtype == torch.int64 and int(entry["step"]) == 7
        assert entry["step"].device.type == "cpu"  # capturable=False: counts on the host
        # Step k wrote slot k % 2: after 7 steps the newest (k = 6) is delta_even.
        assert_close(entry["delta_even"], o.d1, 1e-13, "d1")
        assert_close(entry["delta_odd"], o.d2, 1e-13, "d2")
    group = saved["param_groups"][0]
    assert group["coefficients"] == (1.5, -1.0, 0.5) and group["momentum"] == 0.9


def test_resume_from_state_dict_is_bit_exact(backend, device):
    """Train 10 steps, save, load into a fresh optimizer over copies, train 10 more: the same
    bits as 20 uninterrupted steps."""
    params = make_params(ODD_SHAPES, torch.float32, device)
    grads = make_grads(params, 20)
    optimizer = TMSGD(params, backend=backend, **OPTIONS)
    _train(params, optimizer, grads[:10])

    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "optimizer": optimizer.state_dict()},
               buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    resumed = [torch.nn.Parameter(t.clone()) for t in checkpoint["params"]]
    fresh = TMSGD(resumed, backend=backend, lr=1.0)  # hyperparameters come from the checkpoint
    fresh.load_state_dict(checkpoint["optimizer"])
    assert fresh.param_groups[0]["lr"] == OPTIONS["lr"]

    _train(params, optimizer, grads[10:])
    _train(resumed, fresh, grads[10:])
    for a, b in zip(params, resumed):
        assert torch.equal(a, b)
    for a, b in zip(optimizer.state_dict()["state"].values(), fresh.state_dict()["state"].values()):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_state_loads_across_history_dtype_and_backend(device):
    """A checkpoint written by one configuration continues in another (torch -> auto, fp32
    history -> bf16 history): same trajectory up to bf16 rounding of the history."""
    params = make_params([(4097,)], torch.float32, device)
    grads = make_grads(params, 12)
    first = TMSGD(params, backend="torch", lr=0.05)
    _train(params, first, grads[:6])
    other = [torch.nn.Parameter(p.detach().clone()) for p in params]
    second = TMSGD(other, backend="auto", lr=0.05, history_dtype=torch.bfloat16)
    second.load_state_dict(first.state_dict())
    assert second.param_groups[0]["history_dtype"] is None  # the checkpoint's options win
    second.param_groups[0]["history_dtype"] = torch.bfloat16
    _train(params, first, grads[6:])
    _train(other, second, grads[6:])
    # Six steps of ~0.05 with a history rounded to bf16 (8 bits): well under 1e-2 of movement.
    assert_close(other[0], params[0], 6 * 0.15 * 2**-8, "bf16 history after load")


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_continue_identically(backend, device, how):
    params = make_params([(3,), (4097,)], torch.float32, device)
    grads = make_grads(params, 8)
    optimizer = TMSGD(params, backend=backend, **OPTIONS)
    _train(params, optimizer, grads[:4])
    if how == "deepcopy":
        copied_params, copied = copy.deepcopy((params, optimizer))
    else:
        copied_params, copied = pickle.loads(pickle.dumps((params, optimizer)))
    _train(params, optimizer, grads[4:])
    _train(copied_params, copied, grads[4:])
    for a, b in zip(params, copied_params):
        assert torch.equal(a, b)
