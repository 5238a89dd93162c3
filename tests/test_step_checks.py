"""What the step checks before it changes anything, and the step that only creates state:
gradients replaced between steps are refused before any run of any group is stepped, with one
error type naming the group and the param; meta params step as torch.optim.SGD steps them; and
torch.distributed.checkpoint's state-creating call is recognised by its call site, so that no
training step is mistaken for it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

from tmsgd_kernels import TMSGD


def _snapshot(optimizer: TMSGD) -> list[torch.Tensor]:
    tensors = [p.detach().clone() for g in optimizer.param_groups for p in g["params"]]
    for state in optimizer.state.values():
        tensors.extend(v.clone() for v in state.values() if isinstance(v, torch.Tensor))
    return tensors


def _unchanged(before: list[torch.Tensor], optimizer: TMSGD) -> bool:
    after = _snapshot(optimizer)
    return len(before) == len(after) and all(torch.equal(a, b) for a, b in zip(before, after))


def _replace_grad(param: torch.Tensor, grad: torch.Tensor) -> None:
    """A gradient that `param.grad = grad` would refuse, put in place as code that swaps a
    gradient's data (an all-reduce buffer, a hook) can."""
    if grad.layout != torch.strided:
        param.grad = grad
    else:
        param.grad.data = grad


BAD_GRADS = {
    "dtype": lambda p: torch.ones_like(p, dtype=torch.float64),
    "shape": lambda p: torch.ones(p.numel() + 1),
    "layout": lambda p: torch.ones_like(p).to_sparse(),
}


@pytest.mark.parametrize("wrong", sorted(BAD_GRADS))
def test_a_bad_gradient_in_a_later_group_stops_the_whole_step(backend, wrong):
    """The second group's gradient is replaced after two good steps: nothing of the first group
    (stepped first) may change, and the error names group 1, parameter 1."""
    first = [torch.nn.Parameter(torch.randn(5)) for _ in range(2)]
    second = [torch.nn.Parameter(torch.randn(3)) for _ in range(2)]
    optimizer = TMSGD([{"params": first}, {"params": second, "lr": 0.2}], lr=0.1,
                      momentum=0.9, backend=backend)
    for _ in range(2):
        for p in first + second:
            p.grad = torch.randn_like(p)
        optimizer.step()
    _replace_grad(second[1], BAD_GRADS[wrong](second[1]))
    before = _snapshot(optimizer)
    with pytest.raises(RuntimeError, match="group 1, parameter 1"):
        optimizer.step()
    assert _unchanged(before, optimizer)


def test_a_bad_gradient_in_a_later_run_of_one_group_stops_the_whole_step(backend):
    """fp32 and fp64 params in one group are two runs; the fp64 run's gradient goes bad."""
    params = [torch.nn.Parameter(torch.randn(4)),
              torch.nn.Parameter(torch.randn(4, dtype=torch.float64))]
    optimizer = TMSGD(params, lr=0.1, backend=backend)
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()
    _replace_grad(params[1], torch.randn(4, dtype=torch.float32))
    before = _snapshot(optimizer)
    with pytest.raises(RuntimeError, match="group 0, parameter 1.*dtype"):
        optimizer.step()
    assert _unchanged(before, optimizer)


def test_meta_params_step_as_sgd_steps_them():
    """Params on the meta device (shape-only model building) have no memory to share: stepping
    several works, as torch.optim.SGD's step does, and keeps shapes and dtypes."""
    params = [torch.nn.Parameter(torch.empty(3, 4, device="meta")) for _ in range(3)]
    peers = [torch.nn.Parameter(torch.empty(3, 4, device="meta")) for _ in range(3)]
    for p in params + peers:
        p.grad = torch.empty_like(p)
    torch.optim.SGD(peers, lr=0.1, momentum=0.9).step()
    optimizer = TMSGD(params, lr=0.1, momentum=0.9)
    optimizer.step()
    for p, peer in zip(params, peers):
        assert p.device.type == "meta" and p.shape == peer.shape and p.dtype == peer.dtype
        assert optimizer.state[p]["delta_even"].device.type == "meta"


def _warm_up_pair(backend):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    peer = copy.deepcopy(model)
    options = dict(lr=0.0, momentum=0.9, dampening=0.5, weight_decay=0.01)
    ours = TMSGD(model.parameters(), coefficients=(1.0, 0.0, 0.0), switch_step=2,
                 backend=backend, **options)
    sgd = torch.optim.SGD(peer.parameters(), **options)
    return model, peer, ours, sgd


def _lr_warm_up_steps(model, peer, ours, sgd, step) -> None:
    """A warm-up from lr 0 whose first gradients are exactly zero (a frozen-looking first
    batch), then real gradients at a growing lr."""
    for k in range(5):
        for optimizer in (ours, sgd):
            for group in optimizer.param_groups:
                group["lr"] = 0.05 * k
        grads = [torch.zeros_like(p) if k == 0 else torch.randn_like(p)
                 for p in model.parameters()]
        for p, q, g in zip(model.parameters(), peer.parameters(), grads):
            p.grad, q.grad = g.clone(), g.clone()
        step()
        sgd.step()


def test_a_training_step_at_lr_0_with_zero_gradients_counts(backend):
    """The state-creation rule must not fire in real training: the first step counts, so the
    momentum buffer's first step is torch's buf = g and the run stays on SGD's trajectory."""
    model, peer, ours, sgd = _warm_up_pair(backend)
    _lr_warm_up_steps(model, peer, ours, sgd, ours.step)
    assert [int(s["step"]) for s in ours.state.values()] == [5, 5]
    for p, q in zip(model.parameters(), peer.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_compiled_and_eager_count_the_zero_gradient_step_alike():
    model, peer, ours, sgd = _warm_up_pair("torch")
    torch._dynamo.reset()
    step = torch.compile(ours.step, fullgraph=False, backend="eager")
    _lr_warm_up_steps(model, peer, ours, sgd, step)
    assert [int(s["step"]) for s in ours.state.values()] == [5, 5]
    for p, q in zip(model.parameters(), peer.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_distributed_checkpoint_creates_state_without_a_step(backend):
    """get_optimizer_state_dict on a fresh optimizer calls step() with zero gradients at lr 0:
    that call creates the state with counts 0 and changes no param."""
    model = torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = TMSGD(model.parameters(), lr=0.1, momentum=0.9, backend=backend)
    saved = get_optimizer_state_dict(model, optimizer)
    assert [int(s["step"]) for s in saved["state"].values()] == [0, 0]
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(p.grad is None for p in model.parameters())
