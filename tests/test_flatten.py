"""flatten_parameters: an explicit opt-in that puts a module's params and grads into one buffer
per device and dtype; the optimizer then steps each buffer as one range, with the same result
as stepping the tensors one by one, and follows the module when it changes later."""

from __future__ import annotations

import copy

import pytest
import torch

from tmsgd_kernels import TMSGD, backends, flatten_parameters

OPTIONS = dict(lr=0.05, momentum=0.9, switch_step=1)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _train(model, optimizer, steps: int, set_to_none: bool = True) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=set_to_none)
        model(torch.randn(4, 5, generator=generator)).square().mean().backward()
        optimizer.step()


@pytest.fixture
def call_sizes(backend, monkeypatch):
    """How many tensors each backend call got (1: the run was stepped as one range)."""
    sizes = []
    TMSGD([torch.nn.Parameter(torch.zeros(1))], backend=backend)  # loads the backend module
    module = backends.MODULES[backend]
    original = module.step

    def spy(params, *args, **kwargs):
        sizes.append(len(params))
        return original(params, *args, **kwargs)

    monkeypatch.setattr(module, "step", spy)
    return sizes


@pytest.mark.parametrize("set_to_none", [False, True])
def test_flat_run_equals_tensor_by_tensor(backend, call_sizes, set_to_none):
    flat_model, plain_model = _model(), _model()
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


def test_module_changed_after_flattening_is_followed(backend, call_sizes):
    """A param given new data (or a new dtype) is stepped where it now is, never pulled back."""
    flat_model, plain_model = _model(), _model()
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


def test_tied_weights_stay_tied_and_are_stepped_once(backend):
    embedding = torch.nn.Embedding(6, 4)
    head = torch.nn.Linear(4, 6, bias=False)
    head.weight = embedding.weight
    model = torch.nn.ModuleList([embedding, head])
    reference = copy.deepcopy(model)
    flatten_parameters(model)
    assert model[0].weight is model[1].weight
    optimizer = TMSGD(model.parameters(), backend=backend, lr=0.1)
    expected = TMSGD(reference.parameters(), backend=backend, lr=0.1)
    for m, opt in ((model, optimizer), (reference, expected)):
        opt.zero_grad()
        m[1](m[0](torch.tensor([1, 2, 3]))).sum().backward()
        opt.step()
    assert torch.equal(model[0].weight, reference[0].weight)


def test_compiled_step_of_a_flattened_module(backend):
    """torch.compile(fullgraph=True) traces the step of a flattened module (tensor by tensor)."""
    flat_model, plain_model = _model(), _model()
    flatten_parameters(flat_model)
    flat = TMSGD(flat_model.parameters(), backend=backend, **OPTIONS)
    plain = TMSGD(plain_model.parameters(), backend=backend, **OPTIONS)
    compiled = torch.compile(flat.step, fullgraph=True, backend="eager")
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(4, 5, generator=generator)
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
