"""flatten_parameters: an explicit opt-in that puts a module's trainable params and their grads
into one buffer per device and dtype; the optimizer then steps each buffer as one range, with the
same result as stepping the tensors one by one, and follows the module when it changes later.
Flattening creates no gradient autograd would not make, leaves frozen params alone, refuses
params that share memory, and a run is one range only while every gradient is laid out as its
param (flatten.flat_run, FlatRun.still_matches)."""

from __future__ import annotations

import copy

import pytest
import torch
from lifecycle_helpers import IDENTITY, SgdDrift, assert_within

import tmsgd_kernels.optimizer as optimizer_module
from tmsgd_kernels import TMSGD, flatten, flatten_parameters

OPTIONS = dict(lr=0.05, momentum=0.9, switch_step=1)
LR = 0.05
STEPS = 4


def _model(device: torch.device | str = "cpu") -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(),
                               torch.nn.Linear(7, 3)).to(device)


def _train(model, optimizer, steps: int, set_to_none: bool = True) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=set_to_none)
        x = torch.randn(4, 5, generator=generator).to(next(model.parameters()).device)
        model(x).square().mean().backward()
        optimizer.step()


@pytest.fixture
def call_sizes(monkeypatch):
    """How many tensors each step call (one per run) got (1: the run was stepped as one
    range)."""
    sizes = []
    original = optimizer_module.tmsgd

    def spy(params, *args, **kwargs):
        sizes.append(len(params))
        return original(params, *args, **kwargs)

    monkeypatch.setattr(optimizer_module, "tmsgd", spy)
    return sizes


@pytest.mark.parametrize("set_to_none", [False, True])
def test_flat_run_equals_tensor_by_tensor(backend, device, call_sizes, set_to_none):
    flat_model, plain_model = _model(device), _model(device)
    buffers = flatten_parameters(flat_model)
    assert len(buffers) == 1 and buffers[0].numel() == sum(
        p.numel() for p in plain_model.parameters())
    for a, b in zip(flat_model.parameters(), plain_model.parameters()):
        assert torch.equal(a, b)
    flat = TMSGD(flat_model.parameters(), backend=backend, **OPTIONS)
    plain = TMSGD(plain_model.parameters(), backend=backend, **OPTIONS)
    _train(flat_model, flat, 6, set_to_none)
    flat_calls = list(call_sizes)
    _train(plain_model, plain, 6, set_to_none)
    assert flat_calls == [1] * 6  # one range per step, whether grads were re-allocated or not
    for a, b in zip(flat_model.parameters(), plain_model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(flat.state.values(), plain.state.values()):
        for key in b:
            assert torch.equal(a[key], b[key]), key


def test_module_changed_after_flattening_is_followed(backend, device, call_sizes):
    """A param given new data (or a new dtype) is stepped where it now is, never pulled back."""
    flat_model, plain_model = _model(device), _model(device)
    flatten_parameters(flat_model)
    flat = TMSGD(flat_model.parameters(), backend=backend, **OPTIONS)
    plain = TMSGD(plain_model.parameters(), backend=backend, **OPTIONS)
    _train(flat_model, flat, 2)
    _train(plain_model, plain, 2)
    replaced = flat_model[0].weight.detach().clone()
    flat_model[0].weight.data = replaced
    call_sizes.clear()
    _train(flat_model, flat, 2)
    _train(plain_model, plain, 2)
    assert flat_model[0].weight.data_ptr() == replaced.data_ptr()
    assert call_sizes[0] == 4  # no longer one range: tensor by tensor
    for a, b in zip(flat_model.parameters(), plain_model.parameters()):
        assert torch.equal(a, b)


def test_tied_weights_stay_tied_and_are_stepped_once(backend, device):
    embedding = torch.nn.Embedding(6, 4)
    head = torch.nn.Linear(4, 6, bias=False)
    head.weight = embedding.weight
    model = torch.nn.ModuleList([embedding, head]).to(device)
    reference = copy.deepcopy(model)
    flatten_parameters(model)
    assert model[0].weight is model[1].weight
    optimizer = TMSGD(model.parameters(), backend=backend, lr=0.1)
    expected = TMSGD(reference.parameters(), backend=backend, lr=0.1)
    for m, opt in ((model, optimizer), (reference, expected)):
        opt.zero_grad()
        m[1](m[0](torch.tensor([1, 2, 3], device=device))).sum().backward()
        opt.step()
    assert torch.equal(model[0].weight, reference[0].weight)


def test_compiled_step_of_a_flattened_module(backend, device):
    """torch.compile(fullgraph=True) traces the step of a flattened module (tensor by tensor)."""
    flat_model, plain_model = _model(device), _model(device)
    flatten_parameters(flat_model)
    flat = TMSGD(flat_model.parameters(), backend=backend, **OPTIONS)
    plain = TMSGD(plain_model.parameters(), backend=backend, **OPTIONS)
    compiled = torch.compile(flat.step, fullgraph=True, backend="eager")
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(4, 5, generator=generator).to(device)
        for model, opt, step in ((flat_model, flat, compiled), (plain_model, plain, plain.step)):
            opt.zero_grad()
            model(x).square().mean().backward()
            step()
    for a, b in zip(flat_model.parameters(), plain_model.parameters()):
        # The traced torch backend runs its device-side form: a few roundings per step apart.
        bound = 3 * 4 * torch.finfo(torch.float32).eps * b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=0, atol=bound)


def test_complex_params_are_refused():
    with pytest.raises(ValueError, match="complex"):
        flatten_parameters(torch.nn.Linear(2, 2, dtype=torch.complex64))


# ---------------------------------------------------------- gradients only where autograd made them

class _WithUnusedLayer(torch.nn.Module):
    """`unused` sits between the used layers in the flat buffer and is never reached by autograd
    (an unused layer, an unrouted expert)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.used = torch.nn.Linear(5, 3)
        self.unused = torch.nn.Linear(5, 3)
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.used(x)))


def test_flattening_creates_no_gradient():
    model = _WithUnusedLayer()
    flatten_parameters(model)
    assert all(p.grad is None for p in model.parameters())
    model(torch.randn(4, 5)).sum().backward()
    assert [name for name, p in model.named_parameters() if p.grad is not None] == [
        "used.weight", "used.bias", "head.weight", "head.bias"]


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("direction", [{}, {"weight_decay": 0.1}, {"momentum": 0.9}],
                         ids=["plain", "weight_decay", "momentum"])
def test_unused_layer_is_skipped_as_sgd_skips_it(backend, device, set_to_none, direction):
    """README loop order (backward, step, zero_grad): TMSGD with the identity coefficients on a
    flattened model against torch.optim.SGD on an unflattened copy, stepped on the same gradient
    values. Autograd gives both the same params gradients; the unused layer keeps no gradient, is
    not moved (weight decay and momentum would move it) and gets no state; the rest follows SGD
    within its rounding drift."""
    flat_model, plain_model = _WithUnusedLayer().to(device), _WithUnusedLayer().to(device)
    unused_before = [p.detach().clone() for p in flat_model.unused.parameters()]
    flatten_parameters(flat_model)
    ours = TMSGD(flat_model.parameters(), lr=LR, coefficients=IDENTITY, backend=backend,
                 **direction)
    sgd = torch.optim.SGD(plain_model.parameters(), lr=LR, foreach=False, **direction)
    flat_params, plain_params = list(flat_model.parameters()), list(plain_model.parameters())
    drift, decay = SgdDrift(), direction.get("weight_decay", 0.0)
    generator = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        x = torch.randn(4, 5, generator=generator).to(device)
        for model in (flat_model, plain_model):
            model(x).square().mean().backward()
        assert [p.grad is None for p in flat_params] == [q.grad is None for q in plain_params]
        for p, q in zip(flat_params, plain_params):
            if q.grad is not None:
                q.grad.copy_(p.grad)  # the same numbers on both sides: only rounding differs
        ours.step()
        sgd.step()
        drift.observe(plain_params, [sgd.state[q].get("momentum_buffer") for q in sgd.state],
                      [q.grad + decay * q.detach() for q in plain_params if q.grad is not None])
        drift.step(torch.float32, LR, "momentum" in direction)
        for name, p, q in zip(dict(flat_model.named_parameters()), flat_params, plain_params):
            assert_within(p, q, drift.weight, name)
        ours.zero_grad(set_to_none=set_to_none)
        sgd.zero_grad(set_to_none=set_to_none)
    for p, before in zip(flat_model.unused.parameters(), unused_before):
        assert p.grad is None and p not in ours.state
        assert torch.equal(p, before)
    assert [int(ours.state[p]["step"]) for p in ours.state] == [STEPS] * 4


# ---------------------------------------------------------------------------- frozen params


def test_frozen_params_are_left_where_they_are(backend, device, call_sizes):
    """A frozen layer between trainable ones is not moved (no optimizer steps it); the trainable
    params still form one buffer, stepped as one range, as the unflattened model is stepped."""
    flat_model, plain_model = _model(device), _model(device)
    for model in (flat_model, plain_model):
        model[0].requires_grad_(False)
    frozen = {p: p.data_ptr() for p in flat_model[0].parameters()}
    buffers = flatten_parameters(flat_model)
    assert len(buffers) == 1 and buffers[0].numel() == sum(
        p.numel() for p in flat_model[2].parameters())
    assert {p: p.data_ptr() for p in flat_model[0].parameters()} == frozen
    flat = TMSGD(flat_model.parameters(), backend=backend, **OPTIONS)
    plain = TMSGD(plain_model.parameters(), backend=backend, **OPTIONS)
    _train(flat_model, flat, 3)
    assert call_sizes == [1] * 3
    _train(plain_model, plain, 3)
    for a, b in zip(flat_model.parameters(), plain_model.parameters()):
        assert torch.equal(a, b)


def _complex_last() -> torch.nn.Module:
    return torch.nn.ModuleList([torch.nn.Linear(3, 3),
                                torch.nn.Linear(2, 2, dtype=torch.complex64)])


def _strided_last() -> torch.nn.Module:
    model = torch.nn.ModuleList([torch.nn.Linear(3, 3), torch.nn.Linear(4, 4)])
    model[1].weight = torch.nn.Parameter(torch.randn(4, 8)[:, ::2])
    return model


def _shared_last() -> torch.nn.Module:
    model = torch.nn.ModuleList([torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)])
    model[1].weight.data = model[0].weight.data
    return model


def _overlapping_last() -> torch.nn.Module:
    model = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)])
    model[1].weight.data = model[0].weight.data[1:3]
    return model


def _shared_with_frozen() -> torch.nn.Module:
    model = torch.nn.ModuleList([torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)])
    model[1].weight.data = model[0].weight.data
    model[0].weight.requires_grad_(False)
    return model


REFUSED = {
    "complex": (_complex_last, "complex"),
    "not dense": (_strided_last, "dense"),
    "b.data = a.data": (_shared_last, r"0\.weight and 1\.weight share memory"),
    "partial overlap": (_overlapping_last, r"0\.weight and 1\.weight share memory"),
    "shared with a frozen param": (_shared_with_frozen, r"0\.weight and 1\.weight share memory"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_module_is_left_unchanged(name):
    """Every check runs before any param moves: a ValueError, and every param keeps its data,
    storage and gradient (params sharing memory still share it)."""
    make, message = REFUSED[name]
    model = make()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = [(p.data_ptr(), p.stride(), p.detach().clone(), p.grad) for p in model.parameters()]
    with pytest.raises(ValueError, match=message):
        flatten_parameters(model)
    for p, (address, stride, values, grad) in zip(model.parameters(), before):
        assert (p.data_ptr(), p.stride()) == (address, stride) and p.grad is grad
        assert torch.equal(p.detach(), values)


# ------------------------------------------------- one range only in the params' memory order


class _Permuted(torch.nn.Module):
    """A channels_last convolution and a Linear whose weight is stored transposed: params whose
    memory order is not their logical order."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
        self.linear = torch.nn.Linear(4, 6)
        self.linear.weight = torch.nn.Parameter(torch.randn(4, 6).t())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.tanh(self.conv(x)).mean(dim=(2, 3)))


def _backward(model: torch.nn.Module, generator: torch.Generator) -> None:
    x = torch.randn(2, 3, 5, 5, generator=generator).to(next(model.parameters()).device)
    model(x).square().mean().backward()


def _states(params: list[torch.Tensor]) -> list[dict]:
    return [{"step": torch.tensor(0), "delta_even": torch.zeros_like(p),
             "delta_odd": torch.zeros_like(p)} for p in params]


def _all_reduce_buffer(params: list[torch.Tensor]) -> None:
    """The all-reduce one-buffer idiom: every gradient becomes a contiguous view of one flat
    buffer (same values), whatever its param's memory order."""
    buffer = torch.cat([p.grad.reshape(-1) for p in params])
    offset = 0
    for p in params:
        p.grad = buffer[offset:offset + p.numel()].view(p.shape)
        offset += p.numel()


def _permuted_pair(device: torch.device | str = "cpu"
                   ) -> tuple[torch.nn.Module, torch.nn.Module]:
    flat_model, plain_model = _Permuted().to(device), _Permuted().to(device)
    flatten_parameters(flat_model)
    assert flat_model.linear.weight.stride() == (1, 6)
    assert flat_model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    return flat_model, plain_model


def test_flat_run_needs_each_gradient_in_its_params_memory_order():
    """Params and gradients each back to back in one storage make a one-range run only while
    every gradient is laid out as its param; contiguous views of one buffer for permuted
    params would pair gradient element i with the wrong weight."""
    model, _ = _permuted_pair()
    params = list(model.parameters())
    _backward(model, torch.Generator().manual_seed(1))
    run = flatten.flat_run(params, _states(params), momentum=False)
    assert run is not None
    assert run.param.numel() == run.grad.numel() == sum(p.numel() for p in params)
    assert run.still_matches([p.grad for p in params])
    _all_reduce_buffer(params)
    assert flatten.one_range(params) is not None
    assert flatten.one_range([p.grad for p in params]) is not None
    assert flatten.flat_run(params, _states(params), momentum=False) is None


def test_still_matches_compares_addresses_and_strides():
    """A gradient replaced at the same address with other strides (or moved) is not the one
    the run was built on."""
    model, _ = _permuted_pair()
    params = list(model.parameters())
    _backward(model, torch.Generator().manual_seed(1))
    run = flatten.flat_run(params, _states(params), momentum=False)
    grads = [p.grad for p in params]
    weight = model.linear.weight.grad
    same_place = weight.as_strided(weight.shape, (4, 1), weight.storage_offset())
    assert same_place.data_ptr() == weight.data_ptr()
    assert not run.still_matches([same_place if g is weight else g for g in grads])
    assert not run.still_matches([weight.clone() if g is weight else g for g in grads])
    assert run.still_matches([g.view(g.shape) for g in grads])  # new objects, same layout


def test_flat_run_lays_state_out_in_its_params_memory_order():
    """State back to back in one buffer but in logical order (not the params' memory order) is
    laid out again: each entry becomes a view in its param's strides, with its values."""
    model, _ = _permuted_pair()
    params = list(model.parameters())
    _backward(model, torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    states = _states(params)
    history = torch.randn(sum(p.numel() for p in params), generator=generator)
    offset = 0
    for state, p in zip(states, params):
        state["delta_odd"] = history[offset:offset + p.numel()].view(p.shape)
        offset += p.numel()
    values = [s["delta_odd"].clone() for s in states]
    run = flatten.flat_run(params, states, momentum=False)
    assert run is not None and run.delta_odd.data_ptr() != history.data_ptr()
    for state, p, value in zip(states, params, values):
        assert state["delta_odd"].stride() == p.stride()
        assert torch.equal(state["delta_odd"], value)
    assert flatten.one_range([s["delta_odd"] for s in states]) is not None


def _step_pair(backend, device, change_grads) -> None:
    """Three steps of a flattened and an unflattened model on the same gradient values, the
    flattened model's gradients changed by `change_grads(params, step)` before each step: the
    two stay bit for bit equal."""
    flat_model, plain_model = _permuted_pair(device)
    flat = TMSGD(flat_model.parameters(), backend=backend, **OPTIONS)
    plain = TMSGD(plain_model.parameters(), backend=backend, **OPTIONS)
    generator = torch.Generator().manual_seed(1)
    for k in range(3):
        flat.zero_grad()
        _backward(flat_model, generator)
        change_grads(list(flat_model.parameters()), k)
        for p, q in zip(flat_model.parameters(), plain_model.parameters()):
            q.grad = p.grad.clone()
        flat.step()
        plain.step()
        for (name, p), q in zip(flat_model.named_parameters(), plain_model.parameters()):
            assert torch.equal(p, q), f"step {k}: {name}"


def test_gradients_in_one_contiguous_buffer_step_permuted_params_right(backend, device):
    """The all-reduce idiom on a flattened model with channels_last and transposed weights."""
    _step_pair(backend, device, lambda params, k: _all_reduce_buffer(params))


def test_gradient_replaced_at_its_address_with_other_strides_is_stepped_right(backend, device):
    """The first step builds the one-range run; then the transposed weight's gradient is
    rewritten, same values, at the same address in row-major order."""
    def relayout(params, k):
        if k == 0:
            return
        for p in params:
            if p.stride() == (1, 6):
                values = p.grad.clone()
                p.grad = p.grad.as_strided(p.shape, (4, 1), p.grad.storage_offset())
                p.grad.copy_(values)

    _step_pair(backend, device, relayout)


def test_module_converted_after_flattening_keeps_autograds_gradients(backend, device):
    """A module converted after flattening (here to float64) gets autograd's gradients as they
    are, not copies into the old buffer, and steps as the unflattened module does."""
    flat_model, plain_model = _model(device), _model(device)
    flatten_parameters(flat_model)
    flat_model.double()
    plain_model.double()
    flat = TMSGD(flat_model.parameters(), backend=backend, **OPTIONS)
    plain = TMSGD(plain_model.parameters(), backend=backend, **OPTIONS)
    generator = torch.Generator().manual_seed(1)
    for _ in range(2):
        x = torch.randn(4, 5, generator=generator, dtype=torch.float64).to(device)
        for model, optimizer in ((flat_model, flat), (plain_model, plain)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(flat_model.parameters(), plain_model.parameters()):
        assert a.grad.dtype == torch.float64 and torch.equal(a, b)


def test_double_backward_through_flattened_gradients(device):
    """backward(create_graph=True) (a gradient penalty): the gradients keep their graph, as on
    the unflattened module, instead of being copied out of it."""
    flat_model, plain_model = _model(device), _model(device)
    flatten_parameters(flat_model)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1)).to(device)
    penalties = []
    for model in (flat_model, plain_model):
        model(x).square().mean().backward(create_graph=True)
        params = list(model.parameters())
        penalty = sum(p.grad.square().sum() for p in params)
        penalties.append(torch.autograd.grad(penalty, params))
    for a, b in zip(*penalties):
        assert torch.equal(a, b)


def test_dtensor_params_are_refused_before_any_change():
    from torch import distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import distribute_tensor

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = _model()
        mesh = init_device_mesh("cpu", (1,))
        model[2].weight = torch.nn.Parameter(distribute_tensor(model[2].weight.detach(), mesh))
        addresses = [p.data_ptr() for p in model.parameters()]
        with pytest.raises(ValueError, match="DTensor"):
            flatten_parameters(model)
        assert [p.data_ptr() for p in model.parameters()] == addresses
    finally:
        dist.destroy_process_group()


def test_still_matches_sees_strides_changed_in_place():
    """A gradient object kept but re-strided in place (`t_()`) no longer matches its run."""
    values, grads = torch.randn(32), torch.randn(32)
    params = [torch.nn.Parameter(values[16 * i:16 * (i + 1)].view(4, 4)) for i in range(2)]
    for i, p in enumerate(params):
        p.grad = grads[16 * i:16 * (i + 1)].view(4, 4)
    run = flatten.flat_run(params, _states(params), momentum=False)
    assert run.still_matches([p.grad for p in params])
    params[1].grad.t_()
    assert not run.still_matches([p.grad for p in params])
