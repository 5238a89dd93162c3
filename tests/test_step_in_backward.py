"""tmsgd_kernels.step_in_backward: the step taken inside backward() is the normal step, bit for
bit (accumulation_steps=1); folding k micro-batches equals k accumulated backward passes and one
step within the rounding bound derived below; what cannot work is refused before anything
changes."""

from __future__ import annotations

import copy
import importlib
import warnings

import pytest
import torch
from conftest import BACKENDS, DEVICE
from torch import nn

from tmsgd_kernels import TMSGD, step_in_backward
from tmsgd_kernels.coefficients import delta_coefficients

# The Triton interpreter on CPU tensors is too slow for training loops; on a GPU it runs.
HERE = [b for b in BACKENDS if b != "triton" or DEVICE.type == "cuda"]
# The module (the package's attribute of that name is the function).
sib = importlib.import_module("tmsgd_kernels.step_in_backward")

OPTION_SETS = {
    "plain": dict(lr=0.05),
    "momentum": dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01, switch_step=2),
    "nesterov": dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True, weight_decay=0.02),
    "bf16_history": dict(lr=0.05, momentum=0.9, history_dtype=torch.bfloat16, switch_step=1),
    "int8_history": dict(lr=0.05, momentum=0.9, history_dtype=torch.int8),
    "int8_momentum": dict(lr=0.05, momentum=0.9, history_dtype=torch.int8,
                          momentum_dtype=torch.int8),
}


@pytest.fixture
def small_buckets(monkeypatch):
    """Buckets of 6000 elements: in `mlp` the 6400-element weight is stepped alone, the others
    wait for the end of backward() together."""
    monkeypatch.setattr(sib, "BUCKET_ELEMENTS", 6000)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 80), nn.Tanh(), nn.Linear(80, 80), nn.Tanh(),
                         nn.Linear(80, 3)).to(DEVICE)


def batches(count: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 64, generator=generator).to(DEVICE),
             torch.randn(16, 3, generator=generator).to(DEVICE)) for _ in range(count)]


def loss_of(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def normal_step(model, optimizer, batch) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss_of(model, batch).backward()
    optimizer.step()


def assert_same(model_a, opt_a, model_b, opt_b) -> None:
    """Params and every state tensor bit for bit."""
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.equal(a, b), name
        state_a, state_b = opt_a.state[a], opt_b.state[b]
        assert state_a.keys() == state_b.keys(), name
        for key in state_a:
            assert torch.equal(state_a[key], state_b[key]), f"{name} {key}"


def pair(options: dict, backend: str):
    model_a, model_b = mlp(), mlp()
    opt_a = TMSGD(model_a.parameters(), backend=backend, **options)
    opt_b = TMSGD(model_b.parameters(), backend=backend, **options)
    return model_a, opt_a, model_b, opt_b


# ------------------------------------------------------------ accumulation_steps=1: bit for bit

@pytest.mark.parametrize("backend", HERE)
@pytest.mark.parametrize("options", OPTION_SETS, ids=str)
def test_step_in_backward_is_the_normal_step(backend, options, small_buckets):
    model_a, opt_a, model_b, opt_b = pair(OPTION_SETS[options], backend)
    # A scheduler on each: the hooks read the group's lr when they step.
    sched_a = torch.optim.lr_scheduler.StepLR(opt_a, step_size=2, gamma=0.5)
    sched_b = torch.optim.lr_scheduler.StepLR(opt_b, step_size=2, gamma=0.5)
    handle = step_in_backward(opt_a)
    for batch in batches(5):
        loss_of(model_a, batch).backward()
        assert all(p.grad is None for p in model_a.parameters())  # freed as stepped
        with warnings.catch_warnings():  # no "lr_scheduler.step() before optimizer.step()"
            warnings.simplefilter("error")
            sched_a.step()
        normal_step(model_b, opt_b, batch)
        sched_b.step()
        assert_same(model_a, opt_a, model_b, opt_b)
    handle.remove()


@pytest.mark.parametrize("backend", HERE)
def test_switching_mode_mid_run_equals_never_switching(backend, small_buckets):
    options = OPTION_SETS["momentum"]
    model_a, opt_a, model_b, opt_b = pair(options, backend)
    data = batches(8)
    for number, batch in enumerate(data):
        if number == 2:
            opt_a.zero_grad(set_to_none=True)  # the last normal step's gradients
            handle = step_in_backward(opt_a)
        if number == 5:
            handle.remove()
        if 2 <= number < 5:
            loss_of(model_a, batch).backward()
        else:
            normal_step(model_a, opt_a, batch)
        normal_step(model_b, opt_b, batch)
    assert_same(model_a, opt_a, model_b, opt_b)


@pytest.mark.parametrize("backend", HERE)
def test_checkpoint_and_resume_in_backward(backend, small_buckets):
    """state_dict of the hooked optimizer, loaded into a new hooked one (and into the same one)
    and continued: the same as a run never interrupted."""
    options = OPTION_SETS["nesterov"]
    model_a, opt_a, model_b, opt_b = pair(options, backend)
    data = batches(6)
    handle_a = step_in_backward(opt_a)
    for batch in data[:3]:
        loss_of(model_a, batch).backward()
        normal_step(model_b, opt_b, batch)
    saved_model, saved_opt = copy.deepcopy(model_a.state_dict()), opt_a.state_dict()
    model_c = mlp(seed=5)
    model_c.load_state_dict(saved_model)
    opt_c = TMSGD(model_c.parameters(), backend=backend, **options)
    opt_c.load_state_dict(saved_opt)
    handle_c = step_in_backward(opt_c)
    opt_a.load_state_dict(saved_opt)  # replaces opt_a's state and groups under its hooks
    for batch in data[3:]:
        loss_of(model_a, batch).backward()
        loss_of(model_c, batch).backward()
        normal_step(model_b, opt_b, batch)
    assert_same(model_a, opt_a, model_b, opt_b)
    assert_same(model_c, opt_c, model_b, opt_b)
    handle_a.remove()
    handle_c.remove()


@pytest.mark.parametrize("backend", HERE)
def test_momentum_turned_on_mid_run_in_backward(backend, small_buckets):
    """A buffer started for params that have taken steps begins as torch.optim.SGD's does."""
    model_a, opt_a, model_b, opt_b = pair(dict(lr=0.05), backend)
    handle = step_in_backward(opt_a)
    for number, batch in enumerate(batches(5)):
        if number == 2:
            for group in (*opt_a.param_groups, *opt_b.param_groups):
                group["momentum"] = 0.9
        loss_of(model_a, batch).backward()
        normal_step(model_b, opt_b, batch)
    assert_same(model_a, opt_a, model_b, opt_b)
    handle.remove()


def test_bf16_autocast_is_the_normal_step(small_buckets):
    """Mixed precision without a scaler: fp32 params and gradients, bf16 compute."""
    model_a, opt_a, model_b, opt_b = pair(OPTION_SETS["momentum"], "torch")
    handle = step_in_backward(opt_a)
    for batch in batches(3):
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            loss_a, loss_b = loss_of(model_a, batch), loss_of(model_b, batch)
        loss_a.backward()
        opt_b.zero_grad()
        loss_b.backward()
        opt_b.step()
    assert_same(model_a, opt_a, model_b, opt_b)
    handle.remove()


@pytest.mark.parametrize("backend", HERE)
def test_complex_and_fp64_params(backend):
    """Complex params step as real views, fp64 params in fp64: in backward bit for bit, and two
    folded micro-batches close to two accumulated backward passes."""
    generator = torch.Generator().manual_seed(7)
    start = [torch.randn(6, 5, dtype=torch.complex64, generator=generator),
             torch.randn(9, dtype=torch.float64, generator=generator)]
    micro = [[torch.randn(t.shape, dtype=t.dtype, generator=generator) for t in start]
             for _ in range(6)]
    runs = {}
    for name in ("normal", "hooked", "folded"):
        params = [nn.Parameter(t.clone().to(DEVICE)) for t in start]
        runs[name] = (params, TMSGD(params, backend=backend, **OPTION_SETS["momentum"]))
    hooked = step_in_backward(runs["hooked"][1])
    folded = step_in_backward(runs["folded"][1], accumulation_steps=2)

    def loss(params, coefficients):  # the real part of sum(conj(c) p): gradient c
        return sum((c.conj().to(DEVICE) * p).real.sum() for p, c in zip(params, coefficients))

    for first, second in zip(micro[::2], micro[1::2]):
        for name, (params, optimizer) in runs.items():
            if name == "folded":
                loss(params, first).backward()
                loss(params, second).backward()
                continue
            total = [a + b for a, b in zip(first, second)]
            loss(params, total).backward()
            if name == "normal":
                optimizer.step()
                optimizer.zero_grad()
    for reference, other in zip(runs["normal"][0], runs["hooked"][0]):
        assert torch.equal(reference, other)
    for reference, other in zip(runs["normal"][0], runs["folded"][0]):
        torch.testing.assert_close(other, reference)
    hooked.remove()
    folded.remove()


def test_params_without_gradient_are_not_stepped(small_buckets):
    model_a, opt_a, model_b, opt_b = pair(OPTION_SETS["momentum"], "torch")
    handle = step_in_backward(opt_a)
    for batch in batches(3):
        for model in (model_a, model_b):
            model[0].weight.requires_grad_(False)
        loss_of(model_a, batch).backward()
        normal_step(model_b, opt_b, batch)
    assert model_a[0].weight not in opt_a.state
    assert_same(model_a, opt_a, model_b, opt_b)
    handle.remove()


# ---------------------------------------------------------- accumulation_steps=k: the fold

def linear_loss(params, coefficients) -> torch.Tensor:
    """sum(p * c): its gradient is exactly c, whatever p is, so every run sees the same
    micro-batch gradients and the float64 reference knows them."""
    return sum((p * c).sum() for p, c in zip(params, coefficients))


def exact_cycle(before: dict, grads: list[torch.Tensor], group: dict) -> dict:
    """The float64 step of one param from its actual state `before` (float64 copies) with
    gradient sum(grads): TM-SGD in delta form, nothing rounded but float64."""
    b1, b2 = delta_coefficients(group["coefficients"])
    lr, m = group["lr"], group["momentum"]
    p, count = before["param"], before["step"]
    g = sum(grads)
    g = -g if group["maximize"] else g
    g = g + group["weight_decay"] * p
    u, buf = g, None
    if m != 0:
        first = count == 0 or before.get("momentum_buffer") is None
        buf = g if first else m * before["momentum_buffer"] + (1 - group["dampening"]) * g
        u = g + m * buf if group["nesterov"] else buf
    odd = count % 2 == 1
    d2 = before["delta_odd" if odd else "delta_even"]
    d1 = before["delta_even" if odd else "delta_odd"]
    multistep = count >= group["switch_step"]
    d_new = b1 * d1 + b2 * d2 - lr * u if multistep else -lr * u
    return {"param": p + d_new, "d_new": d_new, "buf": buf, "odd": odd}


def cycle_bound(before: dict, grads: list[torch.Tensor], group: dict, eps: float,
                eps_param: float) -> dict:
    """Elementwise bound on |fp32 result - exact_cycle| for one cycle of k micro-batches, by
    counting roundings, each at most eps / 2 times a bound on the value rounded.

    Buffer: m buf (1), g_1 + wd W (2), times (1 - dampening) and added (2), then 2 per later
    micro-batch: 2k + 3 roundings of values below B = m |buf| + sum |g_j| + wd |W|, so
    |buf error| <= (k + 2) eps B. (Autograd's k - 1 additions and the normal step's 3 are
    fewer.) d_new: b2 d2, b1 d1 and its sum (3), u's terms as for the buffer, -lr u and its sum
    (2 + 2k), all below A = |b1 d1| + |b2 d2| + lr (sum |g_j| + wd |W| + (1 + m) B), plus lr
    (1 + m) times the buffer's error: |d_new error| <= (k + 4) eps A + lr (1 + m) E_buf. W adds
    one rounding of W + d_new in the param dtype (eps_param)."""
    b1, b2 = delta_coefficients(group["coefficients"])
    lr, m, k = group["lr"], group["momentum"], len(grads)
    p = before["param"]
    g_abs = sum(g.abs() for g in grads)
    buf_old = before.get("momentum_buffer")
    magnitude_b = g_abs + group["weight_decay"] * p.abs()
    if m != 0 and buf_old is not None:
        magnitude_b = magnitude_b + m * buf_old.abs()
    error_buf = (k + 2) * eps * magnitude_b if m != 0 else torch.zeros_like(p)
    magnitude_a = (abs(b1) * before["delta_even"].abs() + abs(b1) * before["delta_odd"].abs()
                   + abs(b2) * before["delta_even"].abs() + abs(b2) * before["delta_odd"].abs()
                   + lr * (g_abs + group["weight_decay"] * p.abs() + (1 + m) * magnitude_b))
    error_d = (k + 4) * eps * magnitude_a + lr * (1 + m) * error_buf
    exact = exact_cycle(before, grads, group)
    return {"d_new": error_d, "buf": error_buf,
            "param": error_d + eps_param / 2 * (exact["param"].abs() + error_d)}


def snapshot64(param, state: dict) -> dict:
    taken = {"param": param.detach().double().clone(), "step": int(state.get("step", 0))}
    for key in ("delta_even", "delta_odd", "momentum_buffer"):
        if key in state:
            taken[key] = state[key].double().clone()
    for key in ("delta_even", "delta_odd"):
        taken.setdefault(key, torch.zeros_like(taken["param"]))
    return taken


def check_cycle(params, optimizer, befores, micro_grads, what: str) -> None:
    group = optimizer.param_groups[0]
    for index, (param, before) in enumerate(zip(params, befores)):
        grads = [step_grads[index].double() for step_grads in micro_grads]
        exact = exact_cycle(before, grads, group)
        bound = cycle_bound(before, grads, group, torch.finfo(torch.float32).eps,
                            torch.finfo(param.dtype).eps)
        state = optimizer.state[param]
        got_d = state["delta_odd" if exact["odd"] else "delta_even"].double()
        where = f"{what}, param {index}, count {before['step']}"
        assert int(state["step"]) == before["step"] + 1, where
        assert ((got_d - exact["d_new"]).abs() <= bound["d_new"]).all(), f"{where}: d_new"
        assert ((param.double() - exact["param"]).abs() <= bound["param"]).all(), f"{where}: W"
        if exact["buf"] is not None:
            got_buf = state["momentum_buffer"].double()
            assert ((got_buf - exact["buf"]).abs() <= bound["buf"]).all(), f"{where}: buf"


ACCUMULATION_OPTIONS = {
    "plain": dict(lr=0.1, switch_step=2),
    "momentum": dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.05, switch_step=2),
    "nesterov": dict(lr=0.1, momentum=0.8, nesterov=True, maximize=True, weight_decay=0.05,
                     switch_step=1),
    "bf16_params": dict(lr=0.1, weight_decay=0.05, history_dtype=torch.float32, switch_step=1),
}


@pytest.mark.parametrize("backend", HERE)
@pytest.mark.parametrize("options", ACCUMULATION_OPTIONS, ids=str)
def test_accumulation_within_the_bound_of_the_exact_step(backend, options):
    """Five cycles of three micro-batches, across the warm-up (switch_step), against the float64
    step from the actual state, and the same for k accumulated backward passes and a normal
    step (the bound holds for both; neither is the reference of the other). With bf16 params
    autograd accumulates bf16 gradients, beyond an fp32 bound: there only the fold is checked
    (its fp32 history slot accumulates)."""
    settings = ACCUMULATION_OPTIONS[options]
    dtype = torch.bfloat16 if options == "bf16_params" else torch.float32
    k, cycles = 3, 5
    generator = torch.Generator().manual_seed(3)
    shapes = [(40, 30), (30,), (7, 5, 3)]
    start = [torch.randn(s, generator=generator) for s in shapes]
    runs = {}
    for mode in ("fold", "normal"):
        params = [nn.Parameter(t.to(DEVICE, dtype)) for t in start]
        runs[mode] = (params, TMSGD(params, backend=backend, **settings))
    handle = step_in_backward(runs["fold"][1], accumulation_steps=k)
    for cycle in range(cycles):
        micro = [[torch.randn(s, generator=generator).to(DEVICE, dtype) for s in shapes]
                 for _ in range(k)]
        for mode, (params, optimizer) in runs.items():
            befores = [snapshot64(p, optimizer.state[p]) for p in params]
            for number, coefficients in enumerate(micro):
                linear_loss(params, coefficients).backward()
                if mode == "fold":
                    assert all(p.grad is None for p in params)
                    assert handle.micro_batch == (number + 1) % k
            if mode == "normal":
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if dtype == torch.bfloat16:
                    continue
            check_cycle(params, optimizer, befores, micro, f"{mode} cycle {cycle}")
    handle.remove()


@pytest.mark.parametrize("backend", HERE)
def test_accumulation_of_one_equals_the_normal_step_after_a_folded_cycle(backend):
    """Cycles of 2 then normal steps from the same state: removing the handle between cycles
    leaves the state a normal step continues from (counts, slots, buffers)."""
    settings = ACCUMULATION_OPTIONS["momentum"]
    params = [nn.Parameter(torch.randn(20, 10, device=DEVICE))]
    optimizer = TMSGD(params, backend=backend, **settings)
    handle = step_in_backward(optimizer, accumulation_steps=2)
    for _ in range(2):
        linear_loss(params, [torch.randn(20, 10, device=DEVICE)]).backward()
    assert int(optimizer.state[params[0]]["step"]) == 1
    handle.remove()
    twin = [nn.Parameter(params[0].detach().clone())]
    twin_optimizer = TMSGD(twin, backend=backend, **settings)
    twin_optimizer.load_state_dict(optimizer.state_dict())
    for _ in range(3):
        grad = torch.randn(20, 10, device=DEVICE)
        for p, o in ((params, optimizer), (twin, twin_optimizer)):
            linear_loss(p, [grad]).backward()
            o.step()
            o.zero_grad()
    assert torch.equal(params[0], twin[0])


# ------------------------------------------------------------------------------- refusals

def test_optimizer_step_is_refused_while_on():
    model = mlp()
    optimizer = TMSGD(model.parameters(), lr=0.1)
    handle = step_in_backward(optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="handle.remove"):
        optimizer.step()
    with pytest.raises(RuntimeError, match="closure"):
        optimizer.step(lambda: loss_of(model, batches(1)[0]))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not optimizer.state
    handle.remove()
    normal_step(model, optimizer, batches(1)[0])  # steps again


def test_bad_calls_are_refused():
    model = mlp()
    optimizer = TMSGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="TMSGD"):
        step_in_backward(torch.optim.SGD(model.parameters(), lr=0.1))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="accumulation_steps"):
            step_in_backward(optimizer, accumulation_steps=bad)
    with pytest.raises(TypeError, match="DistributedDataParallel"):
        step_in_backward(optimizer, ddp=model)
    loss_of(model, batches(1)[0]).backward()
    with pytest.raises(RuntimeError, match="zero_grad"):
        step_in_backward(optimizer)
    optimizer.zero_grad()
    handle = step_in_backward(optimizer)
    with pytest.raises(RuntimeError, match="already on"):
        step_in_backward(optimizer)
    handle.remove()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("history", [torch.int8, torch.bfloat16, torch.float16])
def test_accumulation_with_a_narrow_history_is_refused(history, momentum):
    model = mlp()
    optimizer = TMSGD(model.parameters(), lr=0.1, momentum=momentum, history_dtype=history)
    with pytest.raises(ValueError, match="accumulation_steps=1"):
        step_in_backward(optimizer, accumulation_steps=2)
    assert not model[0].weight._post_accumulate_grad_hooks
    step_in_backward(optimizer).remove()  # one micro-batch per step keeps nothing in the slot


def test_accumulation_with_momentum_in_bf16_params_is_refused():
    params = [nn.Parameter(torch.randn(8, 8, dtype=torch.bfloat16))]
    optimizer = TMSGD(params, lr=0.1, momentum=0.9, history_dtype=torch.float32)
    with pytest.raises(ValueError, match="momentum buffer is torch.bfloat16"):
        step_in_backward(optimizer, accumulation_steps=4)
    optimizer.param_groups[0]["momentum"] = 0.0  # the fp32 history accumulates instead
    handle = step_in_backward(optimizer, accumulation_steps=4)
    linear_loss(params, [torch.ones(8, 8, dtype=torch.bfloat16)]).backward()
    assert handle.micro_batch == 1
    # Momentum turned on mid-cycle: refused at the next micro-batch, before anything changes.
    optimizer.param_groups[0]["momentum"] = 0.9
    slot = optimizer.state[params[0]]["delta_even"].clone()
    with pytest.raises(RuntimeError, match="momentum buffer is torch.bfloat16"):
        linear_loss(params, [torch.ones(8, 8, dtype=torch.bfloat16)]).backward()
    assert torch.equal(optimizer.state[params[0]]["delta_even"], slot)
    assert handle.micro_batch == 1


def test_mid_cycle_checkpoint_and_remove_are_refused():
    params = [nn.Parameter(torch.randn(6, 4))]
    optimizer = TMSGD(params, lr=0.1, momentum=0.9)
    handle = step_in_backward(optimizer, accumulation_steps=3)
    linear_loss(params, [torch.ones(6, 4)]).backward()
    for call in (optimizer.state_dict, handle.remove,
                 lambda: optimizer.load_state_dict(optimizer.state_dict())):
        with pytest.raises(RuntimeError, match="1 of 3 micro-batches"):
            call()
    optimizer.param_groups[0]["nesterov"] = True
    buffer = optimizer.state[params[0]]["momentum_buffer"].clone()
    with pytest.raises(RuntimeError, match="between cycles"):
        linear_loss(params, [torch.ones(6, 4)]).backward()
    assert torch.equal(optimizer.state[params[0]]["momentum_buffer"], buffer)
    optimizer.param_groups[0]["nesterov"] = False
    params[0].grad = None  # the refused micro-batch's gradient
    for _ in range(2):
        linear_loss(params, [torch.ones(6, 4)]).backward()
    assert int(optimizer.state_dict()["state"][0]["step"]) == 1
    handle.remove()


def test_grad_scaler_is_refused_before_any_change():
    """GradScaler hands the kernels grad_scale and found_inf only with capturable=True; a
    step in backward could not skip atomically, so a set scale refuses every hook."""
    model = mlp()
    optimizer = TMSGD(model.parameters(), lr=0.1, capturable=True)
    optimizer.grad_scale = torch.tensor(1024.0)
    with pytest.raises(RuntimeError, match="GradScaler"):
        step_in_backward(optimizer)
    del optimizer.grad_scale
    handle = step_in_backward(optimizer)
    optimizer.found_inf = torch.tensor(0.0)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="bf16 autocast"):
        loss_of(model, batches(1)[0]).backward()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not optimizer.state
    handle.remove()


def test_grad_scaler_step_names_the_scaler():
    """Nothing marks a scaled backward pass, so the first is stepped (documented); GradScaler's
    step then meets a clear refusal instead of stepping again."""
    model = mlp()
    optimizer = TMSGD(model.parameters(), lr=0.1, capturable=True)
    handle = step_in_backward(optimizer)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(loss_of(model, batches(1)[0])).backward()
    with pytest.raises(RuntimeError, match="GradScaler"):
        scaler.step(optimizer)
    handle.remove()


def test_bad_gradient_is_refused_before_any_change(small_buckets):
    model = mlp()
    optimizer = TMSGD(model.parameters(), lr=0.1, momentum=0.9)
    # A sparse gradient, left there by a hook registered before step_in_backward's.
    model[0].weight.register_post_accumulate_grad_hook(
        lambda p: setattr(p, "grad", p.grad.to_sparse()))
    handle = step_in_backward(optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="sparse gradients: group 0, parameter 0"):
        loss_of(model, batches(1)[0]).backward()
    # The 6400-element weight was stepped alone before the end of backward(); the bucket with
    # the bad gradient (weight 0 and the biases) was not.
    stepped = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert stepped == [False, False, True, False, False, False]
    handle.remove()
    # After the error and zero_grad(), backward() steps every param again.
    optimizer.zero_grad()
    handle = step_in_backward(optimizer)
    model[0].weight.requires_grad_(False)
    loss_of(model, batches(1)[0]).backward()
    assert all(p.grad is None for p in model.parameters())
    assert int(optimizer.state[model[0].bias]["step"]) == 1
    handle.remove()
