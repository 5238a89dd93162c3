"""flat_params=True against flat_params=False: the same trajectory, step by step, for every backend
that runs on this machine, in the normal training loop and after the views are broken."""

from __future__ import annotations

import copy

import pytest
import torch

from tmsgd_kernels import TMSGD
from tmsgd_kernels.flat_params import layouts

OPTIONS = dict(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(7, 13), torch.nn.Tanh(), torch.nn.Linear(13, 5), torch.nn.Tanh(),
        torch.nn.Linear(5, 1),
    )


def loss_of(model: torch.nn.Module, k: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(100 + k)
    x = torch.randn(16, 7, generator=generator)
    y = torch.randn(16, 1, generator=generator)
    return torch.nn.functional.mse_loss(model(x), y)


def assert_same(plain: TMSGD, flat: TMSGD, plain_params, flat_params, what: str) -> None:
    for i, (p, q) in enumerate(zip(plain_params, flat_params)):
        assert torch.equal(p, q), f"{what}: param {i} differs"
    plain_state, flat_state = plain.state_dict()["state"], flat.state_dict()["state"]
    assert plain_state.keys() == flat_state.keys(), what
    for index, saved in plain_state.items():
        for key, value in saved.items():
            assert torch.equal(value, flat_state[index][key]), f"{what}: state {index} {key}"


def views_intact(optimizer: TMSGD) -> bool:
    found = layouts(optimizer)
    assert found, "flat_params=True built no flat buffers"
    for layout in found:
        for param, view, grad_view in zip(layout.params, layout.param_views, layout.grad_views):
            if param.data_ptr() != view.data_ptr() or param.grad is None:
                return False
            if param.grad.data_ptr() != grad_view.data_ptr():
                return False
    return True


def test_training_loop_matches_and_keeps_views(backend):
    plain_model, flat_model = make_model(), make_model()
    plain = TMSGD(plain_model.parameters(), backend=backend, **OPTIONS)
    flat = TMSGD(flat_model.parameters(), backend=backend, flat_params=True, **OPTIONS)
    for k in range(12):
        for model, optimizer in ((plain_model, plain), (flat_model, flat)):
            optimizer.zero_grad(set_to_none=False)
            loss_of(model, k).backward()
            optimizer.step()
        assert_same(plain, flat, list(plain_model.parameters()), list(flat_model.parameters()),
                    f"step {k}")
        # zero_grad(set_to_none=False) + backward accumulate into the views: nothing to repair.
        assert views_intact(flat), f"step {k}: views broken by the plain training loop"
    # The whole bucket is one range: the params and grads are views of one buffer each.
    (layout,) = layouts(flat)
    for p in flat_model.parameters():
        assert p.untyped_storage().data_ptr() == layout.flat_param.untyped_storage().data_ptr()
        assert p.grad.untyped_storage().data_ptr() == layout.flat_grad.untyped_storage().data_ptr()


def test_zero_grad_zeroes_the_buffer(backend):
    model = make_model()
    optimizer = TMSGD(model.parameters(), backend=backend, flat_params=True, **OPTIONS)
    loss_of(model, 0).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)
    (layout,) = layouts(optimizer)
    assert torch.count_nonzero(layout.flat_grad) == 0
    assert views_intact(optimizer)


def test_zero_grad_set_to_none_skips_params_without_new_grads(backend):
    """As in torch.optim: after zero_grad() (set_to_none=True) a param that gets no gradient is
    not stepped, even though its history would move it."""
    plain_model, flat_model = make_model(), make_model()
    plain = TMSGD(plain_model.parameters(), backend=backend, **OPTIONS)
    flat = TMSGD(flat_model.parameters(), backend=backend, flat_params=True, **OPTIONS)
    for k in range(4):
        for model, optimizer in ((plain_model, plain), (flat_model, flat)):
            optimizer.zero_grad()
            frozen = k == 3  # the first weight gets no gradient in the last step
            model[0].weight.requires_grad_(not frozen)
            loss_of(model, k).backward()
            optimizer.step()
        assert_same(plain, flat, list(plain_model.parameters()), list(flat_model.parameters()),
                    f"step {k}")
    assert flat_model[0].weight.grad is None


BREAKS = {
    "module zero_grad(set_to_none=True)": lambda model: model.zero_grad(set_to_none=True),
    "grad replaced": lambda model: [setattr(p, "grad", torch.zeros_like(p))
                                    for p in model.parameters()],
    "data replaced": lambda model: [setattr(p, "data", p.detach().clone() * 0.5)
                                    for p in list(model.parameters())[::2]],
    "in-place edit": lambda model: [p.data.mul_(0.75) for p in model.parameters()],
    "module reloaded": lambda model: model.load_state_dict(
        {k: v.clone() + 0.01 for k, v in model.state_dict().items()}),
}


@pytest.mark.parametrize("break_views", BREAKS.values(), ids=BREAKS.keys())
def test_broken_views_are_repaired(backend, break_views):
    plain_model, flat_model = make_model(), make_model()
    plain = TMSGD(plain_model.parameters(), backend=backend, **OPTIONS)
    flat = TMSGD(flat_model.parameters(), backend=backend, flat_params=True, **OPTIONS)
    for k in range(10):
        for model, optimizer in ((plain_model, plain), (flat_model, flat)):
            optimizer.zero_grad()
            if k in (3, 4, 7):
                break_views(model)
            loss_of(model, k).backward()
            optimizer.step()
        assert_same(plain, flat, list(plain_model.parameters()), list(flat_model.parameters()),
                    f"step {k}")
        assert views_intact(flat), f"step {k}: views not repaired"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16],
                         ids=str)
def test_assigned_grads_every_dtype_and_odd_shapes(backend, dtype):
    """Grads assigned afresh every step (views broken every step), odd shapes, complex params."""
    shapes = [(), (0,), (1,), (3,), (4097,), (7, 5)]
    generator = torch.Generator().manual_seed(0)
    values = [torch.randn(s, generator=generator, dtype=torch.float64).to(dtype) for s in shapes]
    if dtype in (torch.float32, torch.float64):
        values.append(torch.randn(3, 2, generator=generator, dtype=torch.float64).to(dtype))
        values[-1] = torch.view_as_complex(values[-1])
    plain_params = [torch.nn.Parameter(v.clone()) for v in values]
    flat_params = [torch.nn.Parameter(v.clone()) for v in values]
    plain = TMSGD(plain_params, backend=backend, history_dtype=torch.float32, **OPTIONS)
    flat = TMSGD(flat_params, backend=backend, history_dtype=torch.float32, flat_params=True,
                 **OPTIONS)
    for k in range(8):
        grads = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in plain_params]
        for params, optimizer in ((plain_params, plain), (flat_params, flat)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
        assert_same(plain, flat, plain_params, flat_params, f"step {k}")


def test_state_dict_moves_between_flat_and_plain(backend):
    flat_model = make_model()
    flat = TMSGD(flat_model.parameters(), backend=backend, flat_params=True, **OPTIONS)
    for k in range(3):
        flat.zero_grad()
        loss_of(flat_model, k).backward()
        flat.step()
    plain_model = copy.deepcopy(flat_model)
    plain = TMSGD(plain_model.parameters(), backend=backend, **OPTIONS)
    plain.load_state_dict(flat.state_dict())
    for k in range(3, 6):
        for model, optimizer in ((plain_model, plain), (flat_model, flat)):
            optimizer.zero_grad()
            loss_of(model, k).backward()
            optimizer.step()
        assert_same(plain, flat, list(plain_model.parameters()), list(flat_model.parameters()),
                    f"step {k}")
