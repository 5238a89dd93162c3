"""The state model across a run's life: what may change between steps (momentum, dtypes,
shapes, layouts, groups, missing gradients, state written from outside) gives what
torch.optim.SGD gives under the identity coefficients and what the float64 oracle gives under
the paper's; bad input is refused before anything changes; small API promises."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from lifecycle_helpers import (
    IDENTITY,
    SgdPair,
    Snapshot,
    assert_within,
    assign,
    fixed_grads,
    heavy_ball,
    newest_slot,
    oracle_step_sgd_rules,
    oracle_with_history,
    twin_params,
)
from oracle import OracleParam
from torch._dynamo.testing import CompileCounter
from trajectory import Tolerance, make_params

from tmsgd_kernels import TMSGD, functional, implementations, native_extension

LR = 0.05
M = 0.9
F32 = torch.float32


def _sgd(params, **options):
    return torch.optim.SGD(params, foreach=False, **{"lr": LR, **options})


def _pair(shapes, backend, device, dtype=F32, tm_options=None, sgd_options=None, seed=0):
    ours = make_params(shapes, dtype, device, seed=seed)
    theirs = twin_params(ours)
    tm = TMSGD(ours, backend=backend, **{"lr": LR, "coefficients": IDENTITY,
                                          **(tm_options or {})})
    return SgdPair(ours, theirs, tm, _sgd(theirs, **(sgd_options or {})))


class _OracleRun:
    """TMSGD (paper coefficients) beside one oracle per param, compared after every step."""

    def __init__(self, params, tmsgd, dtype=F32, history_dtype=None, momentum=M):
        self.params, self.tmsgd = params, tmsgd
        self.oracles = [OracleParam(p) for p in params]
        self.tolerance = Tolerance(dtype, history_dtype or dtype, momentum)
        self.steps = 0

    def step(self, grads, options_per_param) -> None:
        assign(self.params, grads)
        self.tmsgd.step()
        for o, p, g, options in zip(self.oracles, self.params, grads, options_per_param):
            if g is not None:
                oracle_step_sgd_rules(o, g.to(p.dtype).double(), **options)
        self.steps += 1
        self.tolerance.observe(self.oracles)
        self.check(f"step {self.steps}")

    def check(self, what: str) -> None:
        for i, (p, o) in enumerate(zip(self.params, self.oracles)):
            where = f"{what}: param {i} {tuple(p.shape)}"
            assert_within(p, o.weight, self.tolerance.weight(self.steps), where)
            if o.step:
                state = self.tmsgd.state[p]
                assert int(state["step"]) == o.step, f"{where}: step count"
                assert_within(state[newest_slot(o.step)], o.d1, self.tolerance.history(),
                              f"{where}: newest step")
                assert_within(state[newest_slot(o.step - 1)], o.d2,
                              self.tolerance.history(), f"{where}: older step")


# ------------------------------------------------------------ 1. changes between steps vs SGD


@pytest.mark.parametrize("direction", [{}, {"dampening": 0.3}, {"nesterov": True}],
                         ids=["plain", "dampening", "nesterov"])
def test_momentum_on_off_on_is_sgd(backend, device, direction):
    """Momentum turned on after 3 steps, off after 3 more, on again after 2. torch.optim.SGD
    starts a buffer as g when momentum starts (dampening skips that first step), leaves it
    alone while momentum is off and blends it again when momentum is back. The last param gets
    its first gradient only when momentum starts (count 0 there: buf = g too)."""
    shapes = [(), (5,), (3, 4), (6,)]
    pair = _pair(shapes, backend, device)
    schedule = [0.0] * 3 + [M] * 3 + [0.0] * 2 + [M] * 3
    grads = fixed_grads(shapes, len(schedule))
    kept = None
    for k, m in enumerate(schedule):
        for optimizer in (pair.tmsgd, pair.sgd):
            group = optimizer.param_groups[0]
            group.update(momentum=m, dampening=direction.get("dampening", 0.0),
                         nesterov=bool(m) and direction.get("nesterov", False))
        pair.step([*grads[k][:3], grads[k][3] if k >= 3 else None])
        counts = [int(pair.tmsgd.state.get(p, {}).get("step", 0)) for p in pair.ours]
        assert counts == [k + 1] * 3 + [max(k - 2, 0)], f"step {k}: counts {counts}"
        buffers = [pair.tmsgd.state.get(p, {}).get("momentum_buffer") for p in pair.ours]
        if m == 0 and kept is not None:  # switched off: the buffers are left exactly alone
            for i, (buf, old) in enumerate(zip(buffers, kept)):
                assert torch.equal(buf, old), f"step {k}: buffer {i} changed while off"
        kept = [b.clone() for b in buffers] if m else kept
    assert all(p in pair.sgd.state for p in pair.theirs)  # the buffers were compared


def test_momentum_on_off_on_against_the_oracle(backend, device):
    """The same schedule with the paper's coefficients and warm-up: the oracle starts its buffer
    as g when momentum starts (SGD's rule), leaves it while momentum is off, blends it after."""
    shapes = [(5,), (2, 3)]
    params = make_params(shapes, F32, device)
    tm = TMSGD(params, lr=LR, dampening=0.3, switch_step=2, backend=backend)
    run = _OracleRun(params, tm)
    schedule = [0.0] * 3 + [M] * 3 + [0.0] * 2 + [M] * 3
    for k, step_grads in enumerate(fixed_grads(shapes, len(schedule))):
        tm.param_groups[0]["momentum"] = schedule[k]
        options = {"lr": LR, "momentum": schedule[k], "dampening": 0.3, "switch_step": 2}
        run.step(step_grads, [options] * 2)


@pytest.mark.parametrize("start, end", [(F32, torch.float64), (torch.float64, F32)], ids=str)
def test_model_dtype_change_against_the_oracle(backend, device, start, end):
    """Params converted to float64 / float32 after 3 steps (p.data = p.data.to(dtype), what
    model.double() / .float() do), paper coefficients with momentum: the history
    and buffer are converted, not restarted, so the oracle just continues (bounds of the
    coarser dtype, fp32, over every step plus the conversion's rounding)."""
    params = make_params([(4, 3), (3,)], start, device)
    tm = TMSGD(params, lr=LR, momentum=M, backend=backend)
    run = _OracleRun(params, tm, dtype=F32)
    options = [{"lr": LR, "momentum": M}] * 2
    grads = fixed_grads([(4, 3), (3,)], 7)
    for k in range(7):
        if k == 3:
            for p in params:
                p.data = p.data.to(end)
            run.steps += 1  # the conversion rounds once more: one step's worth of error
        run.step(grads[k], options)
    assert all(tm.state[p][key].dtype == end for p in params
               for key in ("delta_even", "delta_odd", "momentum_buffer"))


@pytest.fixture
def fresh_dynamo():
    """Dynamo's caches emptied before and after: compiled tests neither see nor leave entries
    (they count against the recompile limit)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compiled_late_momentum(backend, device):
    """Momentum turned on after 3 steps, dampening 0.5, torch.compile(optimizer.step) (dynamo's
    graphs run eagerly: CompileCounter) after one eager step (so every backend's kernels are
    loaded before tracing starts); compared with torch.optim.SGD after every step."""
    shapes = [(4,), (3,)]
    pair = _pair(shapes, backend, device, tm_options={"dampening": 0.5},
                 sgd_options={"dampening": 0.5})
    grads = fixed_grads(shapes, 7)
    pair.step(grads[0])
    pair.tmsgd.step = torch.compile(pair.tmsgd.step, backend=CompileCounter())  # for SgdPair
    for k in range(1, 7):
        if k == 3:
            pair.tmsgd.param_groups[0]["momentum"] = pair.sgd.param_groups[0]["momentum"] = M
        pair.step(grads[k])


def test_momentum_turned_on_late_under_compile_is_sgd(backend, device, fresh_dynamo):
    """Under torch.compile too, the first momentum step takes buf = g and every later one
    blends with the group's dampening, as torch.optim.SGD does."""
    _compiled_late_momentum(backend, device)


def test_compiled_step_is_not_reused_after_the_plan_changed(backend, device, fresh_dynamo):
    """The same once dynamo's recompile limit is reached (2 here; 8 by default, which a
    process with several compiled optimizers reaches): a graph may be replayed only while
    everything it was traced on (momentum's first step, the runs) still holds, so the steps
    after momentum's first one must not reuse that step's graph."""
    with torch._dynamo.config.patch(recompile_limit=2):
        _compiled_late_momentum(backend, device)


_CONVERSIONS = {
    "half": (lambda model: model.half(), torch.float16),
    "bfloat16": (lambda model: model.to(torch.bfloat16), torch.bfloat16),
    "double": (lambda model: model.double(), torch.float64),
}


@pytest.mark.parametrize("form", ["momentum", "heavy_ball"])
@pytest.mark.parametrize("conversion", list(_CONVERSIONS))
def test_model_dtype_change_with_momentum_is_sgd(backend, device, conversion, form):
    """model.half() / .to(bfloat16) / .double() after 3 steps with momentum (TMSGD's momentum
    option, or the heavy-ball coefficients whose history plays the buffer's part).

    What is fair: torch.optim.SGD keeps its fp32 buffer after the conversion and promotes in
    every step, while TMSGD keeps its state in the param's dtype (param_state.py) and converts
    it at the next step. The reference is therefore SGD on a model converted the same way with
    its buffers converted too (what SGD's own load_state_dict does: it casts state to the
    param's dtype). From there both run the same real-number recursion in the new dtype and
    differ only by rounding (SgdDrift, with one more rounding at the conversion); a buffer or
    history dropped or rescaled at the conversion would be off by about m |buf| per step."""
    convert, dtype = _CONVERSIONS[conversion]
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 3)).to(device)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    twin = copy.deepcopy(model)
    ours, theirs = list(model.parameters()), list(twin.parameters())
    options = {"momentum": M} if form == "momentum" else {"coefficients": heavy_ball(M)}
    tm = TMSGD(ours, backend=backend, **{"lr": LR, "coefficients": IDENTITY, **options})
    pair = SgdPair(ours, theirs, tm, _sgd(theirs, momentum=M))
    shapes = [p.shape for p in ours]
    grads = fixed_grads(shapes, 7)
    for k in range(3):
        pair.step(grads[k])
    convert(model)
    convert(twin)
    assert all(a is b for a, b in zip(model.parameters(), ours, strict=True))  # same Parameters
    assert all(p.dtype == dtype for p in ours)
    for p in theirs:
        state = pair.sgd.state[p]
        state["momentum_buffer"] = state["momentum_buffer"].to(dtype)
    pair.drift.convert(dtype)
    for k in range(3, 7):
        pair.step(grads[k])
        for i, p in enumerate(ours):
            state = tm.state[p]
            kinds = {key: state[key].dtype for key in ("delta_even", "delta_odd",
                                                         "momentum_buffer") if key in state}
            assert set(kinds.values()) == {dtype}, f"param {i} state dtypes {kinds}"


def test_param_data_of_another_shape_restarts_as_a_fresh_sgd(backend, device):
    """p.data = a tensor of another shape: its buffer and history described another tensor, so
    TMSGD starts that param over (count 0, buf = g), as a fresh torch.optim.SGD for it does
    (SGD itself would fail on the old buffer); the other params continue unchanged."""
    shapes = [(3, 4), (5,)]
    pair = _pair(shapes, backend, device, tm_options={"momentum": M})
    sgds = [_sgd([p], momentum=M) for p in pair.theirs]  # SGD steps each param on its own
    pair.sgd = _MultiSgd(sgds)
    grads = fixed_grads(shapes, 3)
    for k in range(3):
        pair.step(grads[k])
    new = torch.randn(2, 7, generator=torch.Generator().manual_seed(5), dtype=F32).to(device)
    pair.ours[0].data = new.clone()
    pair.theirs[0] = torch.nn.Parameter(new.clone())
    sgds[0] = _sgd([pair.theirs[0]], momentum=M)
    for k, step_grads in enumerate(fixed_grads([(2, 7), (5,)], 4, seed=2)):
        pair.step(step_grads)
        state = pair.tmsgd.state[pair.ours[0]]
        assert int(state["step"]) == k + 1
        assert all(state[key].shape == (2, 7) for key in ("delta_even", "delta_odd",
                                                           "momentum_buffer"))
        assert int(pair.tmsgd.state[pair.ours[1]]["step"]) == k + 4


class _MultiSgd:
    """Several torch.optim.SGD as one (each param in its own optimizer)."""

    def __init__(self, optimizers) -> None:
        self.optimizers = optimizers  # the list itself: a test may replace an entry

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    @property
    def state(self):
        return {p: s for optimizer in self.optimizers for p, s in optimizer.state.items()}

    @property
    def param_groups(self):
        return [g for optimizer in self.optimizers for g in optimizer.param_groups]


def test_param_data_of_another_shape_restarts_against_the_oracle(backend, device):
    """The same with the paper's coefficients: the reshaped param's oracle starts afresh (zero
    history) at its new weights, the other param's oracle continues."""
    shapes = [(3, 4), (5,)]
    params = make_params(shapes, F32, device)
    run = _OracleRun(params, TMSGD(params, lr=LR, momentum=M, backend=backend))
    options = [{"lr": LR, "momentum": M}] * 2
    for step_grads in fixed_grads(shapes, 3):
        run.step(step_grads, options)
    params[0].data = torch.randn(2, 7, generator=torch.Generator().manual_seed(5)).to(device)
    run.oracles[0] = OracleParam(params[0])
    for step_grads in fixed_grads([(2, 7), (5,)], 4, seed=2):
        run.step(step_grads, options)
    assert run.oracles[0].step == 4 and run.oracles[1].step == 7


@pytest.mark.parametrize("reference", ["sgd", "oracle"])
def test_param_data_in_channels_last_keeps_its_state(backend, device, reference):
    """p.data = p.data.to(memory_format=channels_last): same numbers in another layout, so the
    state is converted, not restarted (SGD continues; the oracle continues), and laid out like
    the param again."""
    shapes = [(4, 3, 3, 2), (4,)]
    grads = fixed_grads(shapes, 7)
    if reference == "sgd":
        run = _pair(shapes, backend, device, tm_options={"momentum": M, "dampening": 0.2},
                    sgd_options={"momentum": M, "dampening": 0.2})
        params, tm = run.ours, run.tmsgd
    else:
        params = make_params(shapes, F32, device)
        tm = TMSGD(params, lr=LR, momentum=M, switch_step=1, backend=backend)
        run = _OracleRun(params, tm)
    options = [{"lr": LR, "momentum": M, "switch_step": 1}] * 2
    for k in range(7):
        if k == 3:
            for weight in (params[0], *getattr(run, "theirs", [])[:1]):
                weight.data = weight.data.to(memory_format=torch.channels_last)
        if reference == "sgd":
            run.step(grads[k])
        else:
            run.step(grads[k], options)
    weight = params[0]
    assert weight.is_contiguous(memory_format=torch.channels_last)
    for key in ("delta_even", "delta_odd", "momentum_buffer"):
        assert tm.state[weight][key].stride() == weight.stride(), key
    assert int(tm.state[weight]["step"]) == 7


def test_add_param_group_mid_run_is_sgd(backend, device):
    """A group added after 3 steps, with its own lr, momentum and dampening (the rest from the
    defaults), steps as the same group added to torch.optim.SGD."""
    pair = _pair([(4,), (2, 3)], backend, device, tm_options={"momentum": M},
                 sgd_options={"momentum": M})
    grads = fixed_grads([(4,), (2, 3), (5,)], 7)
    for k in range(3):
        pair.step(grads[k][:2])
    (extra,) = make_params([(5,)], F32, device, seed=3)
    twin = twin_params([extra])[0]
    new_group = {"lr": 0.1, "momentum": 0.5, "dampening": 0.25}
    pair.tmsgd.add_param_group({"params": [extra], **new_group})
    pair.sgd.add_param_group({"params": [twin], **new_group})
    pair.ours.append(extra)
    pair.theirs.append(twin)
    assert pair.tmsgd.param_groups[1]["coefficients"] == IDENTITY  # from the defaults
    for k in range(3, 7):
        pair.step(grads[k])
    assert int(pair.tmsgd.state[extra]["step"]) == 4


def test_add_param_group_mid_run_against_the_oracle(backend, device):
    params = make_params([(4,), (2, 3)], F32, device)
    tm = TMSGD(params, lr=LR, momentum=M, backend=backend)
    run = _OracleRun(params, tm)
    grads = fixed_grads([(4,), (2, 3), (5,)], 7)
    for k in range(3):
        run.step(grads[k][:2], [{"lr": LR, "momentum": M}] * 2)
    (extra,) = make_params([(5,)], F32, device, seed=3)
    tm.add_param_group({"params": [extra], "lr": 0.1, "switch_step": 2})
    run.params.append(extra)
    run.oracles.append(OracleParam(extra))
    options = [{"lr": LR, "momentum": M}] * 2 + [{"lr": 0.1, "momentum": M, "switch_step": 2}]
    for k in range(3, 7):
        run.step(grads[k], options)


def test_params_without_gradient_for_some_steps_are_sgd(backend, device):
    """A param without a gradient is not stepped: its count stays (the per-param `step` is the
    number of steps it took) and its buffer waits, as torch.optim.SGD's does."""
    shapes = [(3,), (2, 2), (6,)]
    pair = _pair(shapes, backend, device, tm_options={"momentum": M, "dampening": 0.1},
                 sgd_options={"momentum": M, "dampening": 0.1})
    taken = [0, 0, 0]
    for k, step_grads in enumerate(fixed_grads(shapes, 9)):
        present = [True, k % 3 != 1, k >= 4 and k != 6]
        pair.step([g if has else None for g, has in zip(step_grads, present)])
        taken = [t + has for t, has in zip(taken, present)]
        for i, p in enumerate(pair.ours):
            if taken[i]:
                assert int(pair.tmsgd.state[p]["step"]) == taken[i], f"step {k}, param {i}"
            else:
                assert p not in pair.tmsgd.state
    assert taken == [9, 6, 4]


def test_params_without_gradient_continue_their_own_history(backend, device):
    """Paper coefficients, two groups: a param skipped for some steps continues its own
    history and warm-up; its oracle advances only when it steps."""
    shapes = [(3,), (2, 2), (6,)]
    params = make_params(shapes, F32, device)
    tm = TMSGD([{"params": params[:2]}, {"params": params[2:], "switch_step": 3}],
               lr=LR, momentum=M, backend=backend)
    run = _OracleRun(params, tm)
    options = [{"lr": LR, "momentum": M}] * 2 + [{"lr": LR, "momentum": M, "switch_step": 3}]
    for k, step_grads in enumerate(fixed_grads(shapes, 10)):
        present = [True, k % 3 != 1, k % 4 in (0, 3)]
        run.step([g if has else None for g, has in zip(step_grads, present)], options)
    assert [o.step for o in run.oracles] == [10, 7, 5]


@pytest.mark.parametrize("count", ["int64", "float32", "python int"])
@pytest.mark.parametrize("how", ["new dict", "replaced tensors"])
def test_state_written_directly_is_used(backend, device, how, count):
    """State written into optimizer.state[p] between steps, as ZeroRedundancyOptimizer does
    (a new dict) or by replacing its tensors: the next step uses it. Paper coefficients with
    warm-up and momentum, checked against an oracle set to the written state (count 6, so the
    newest step is in delta_odd and warm-up is over); the count may arrive as torch's
    load_state_dict leaves it for capturable groups (float32) or as a plain int."""
    shapes = [(5,), (2, 3)]
    params = make_params(shapes, F32, device)
    options = {"lr": LR, "momentum": M, "switch_step": 4}
    tm = TMSGD(params, backend=backend, **options)
    run = _OracleRun(params, tm)
    grads = fixed_grads(shapes, 6)
    for k in range(2):
        run.step(grads[k], [options] * 2)
    generator = torch.Generator().manual_seed(9)
    newest, older, buffer = (0.1 * torch.randn(5, generator=generator) for _ in range(3))
    written = {"delta_odd": newest.to(device), "delta_even": older.to(device),
               "momentum_buffer": buffer.to(device),
               "step": {"int64": torch.tensor(6), "float32": torch.tensor(6.0),
                        "python int": 6}[count]}
    if how == "new dict":
        tm.state[params[0]] = written
    else:
        tm.state[params[0]].update(written)
    oracle = oracle_with_history(params[0], newest, older)
    oracle.momentum_buffer, oracle.step = buffer.double(), 6
    run.oracles[0] = oracle
    for k in range(2, 6):
        run.step(grads[k], [options] * 2)
    assert int(tm.state[params[0]]["step"]) == 10


def test_state_written_directly_is_used_by_sgd_identity(backend, device):
    """The same against torch.optim.SGD: a momentum buffer written into both optimizers'
    state (TMSGD's as a whole new dict) is what their next steps blend."""
    shapes = [(4,), (3, 2)]
    pair = _pair(shapes, backend, device, tm_options={"momentum": M},
                 sgd_options={"momentum": M})
    grads = fixed_grads(shapes, 6)
    for k in range(3):
        pair.step(grads[k])
    buffer = torch.randn(4, generator=torch.Generator().manual_seed(4)).to(device)
    pair.tmsgd.state[pair.ours[0]] = {
        "step": torch.tensor(3), "delta_even": torch.zeros(4, device=device),
        "delta_odd": torch.zeros(4, device=device), "momentum_buffer": buffer.clone()}
    pair.sgd.state[pair.theirs[0]] = {"momentum_buffer": buffer.clone()}
    pair.drift.observe(buffers=[buffer])
    for k in range(3, 6):
        pair.step(grads[k])


# ------------------------------------------------------------- 5. bad input, nothing changes


def _first_steps(backend, device, steps=2):
    """A one-group optimizer (with momentum) that has taken `steps` steps."""
    params = make_params([(4,), (2, 3)], F32, device)
    tm = TMSGD(params, lr=LR, momentum=M, backend=backend)
    for step_grads in fixed_grads([(4,), (2, 3)], steps):
        assign(params, step_grads)
        tm.step()
    return params, tm


def _overlapping(device):
    base = torch.randn(10, device=device)
    return [torch.nn.Parameter(base[:6]), torch.nn.Parameter(base[4:])], "share memory"


def _expanded(device):
    return [torch.nn.Parameter(torch.randn(3, 1, device=device).expand(3, 4))], "share memory"


@pytest.mark.parametrize("when", ["first step", "after steps"])
@pytest.mark.parametrize("make_bad", [_overlapping, _expanded], ids=["views", "expanded"])
def test_overlapping_params_raise_before_any_change(backend, device, make_bad, when):
    """Params sharing memory (two views of one region; an expanded, stride-0 param) in the
    second group: ValueError before any param, state or count changes, at the first step or
    once the first group has state."""
    params, tm = _first_steps(backend, device, steps=0 if when == "first step" else 2)
    bad, message = make_bad(device)
    tm.add_param_group({"params": bad})
    everything = [*params, *bad]
    assign(everything, [torch.ones(p.shape) for p in everything])
    before = Snapshot(tm, everything)
    with pytest.raises(ValueError, match=message):
        tm.step()
    before.assert_unchanged("refused step")
    with pytest.raises(ValueError, match=message):  # and again: nothing was cached
        tm.step()
    before.assert_unchanged("refused step, twice")


def test_params_overlapping_across_groups_raise(backend, device):
    (a, b), message = _overlapping(device)
    (good,) = make_params([(3,)], F32, device)
    tm = TMSGD([{"params": [good, a]}, {"params": [b]}], lr=LR, backend=backend)
    assign([good, a, b], [torch.ones(p.shape) for p in (good, a, b)])
    before = Snapshot(tm, [good, a, b])
    with pytest.raises(ValueError, match=message):
        tm.step()
    before.assert_unchanged("refused step")


def test_params_that_view_disjoint_parts_of_one_storage_are_sgd(backend, device):
    """The control: views of one storage that do not overlap are ordinary params."""
    base = torch.randn(12, device=device)
    ours = [torch.nn.Parameter(base[:5]), torch.nn.Parameter(base[5:].view(7))]
    theirs = twin_params(ours)
    pair = SgdPair(ours, theirs, TMSGD(ours, lr=LR, coefficients=IDENTITY, momentum=M,
                                       backend=backend), _sgd(theirs, momentum=M))
    for step_grads in fixed_grads([(5,), (7,)], 4):
        pair.step(step_grads)


class _TiedLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(11, 4)
        self.mix = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 11, bias=False)
        self.head.weight = self.embed.weight  # tied input and output embedding

    def forward(self, tokens):
        return self.head(torch.tanh(self.mix(self.embed(tokens))))


def test_tied_module_weights_are_stepped_once(backend, device):
    """Tied embedding/output weights appear once in module.parameters() and are stepped once per
    step with the sum of both uses' gradients, as torch.optim.SGD steps them."""
    torch.manual_seed(0)
    model = _TiedLM().to(device)
    twin = copy.deepcopy(model)
    assert twin.head.weight is twin.embed.weight
    ours, theirs = list(model.parameters()), list(twin.parameters())
    assert len(ours) == 3
    tm = TMSGD(ours, lr=LR, coefficients=IDENTITY, momentum=M, backend=backend)
    pair = SgdPair(ours, theirs, tm, _sgd(theirs, momentum=M))
    tokens = torch.randint(0, 11, (6,), generator=torch.Generator().manual_seed(1)).to(device)
    for k in range(5):
        tm.zero_grad()
        model(tokens).logsumexp(-1).sum().backward()
        pair.step([p.grad.double() for p in ours])
        assert int(tm.state[model.embed.weight]["step"]) == k + 1


def test_param_listed_twice_is_stepped_once(backend, device):
    """The same Parameter listed twice in a group (torch warns) is stepped once per step: bit
    for bit what TMSGD gives with it listed once."""
    shapes = [(5,), (2, 3)]
    params = make_params(shapes, F32, device)
    once = twin_params(params)
    with pytest.warns(UserWarning, match="duplicate"):
        twice = TMSGD([params[0], params[1], params[0]], lr=LR, momentum=M, backend=backend)
    single = TMSGD(once, lr=LR, momentum=M, backend=backend)
    for k, step_grads in enumerate(fixed_grads(shapes, 5)):
        assign(params, step_grads)
        assign(once, step_grads)
        twice.step()
        single.step()
        for i, (a, b) in enumerate(zip(params, once)):
            assert torch.equal(a, b), f"step {k}, param {i}"
            assert int(twice.state[a]["step"]) == k + 1


def _sparse(p):
    indices = torch.tensor([[0, 2]], device=p.device)
    return torch.sparse_coo_tensor(indices, torch.ones(2, *p.shape[1:], device=p.device),
                                   p.shape, check_invariants=True)


@pytest.mark.parametrize("when", ["first step", "after steps"])
def test_sparse_gradient_raises_before_any_change(backend, device, when):
    params, tm = _first_steps(backend, device, steps=0 if when == "first step" else 2)
    (embedding,) = make_params([(5, 3)], F32, device, seed=2)
    tm.add_param_group({"params": [embedding]})
    if when == "after steps":  # the second group has a cached plan too
        assign([*params, embedding], [torch.ones(p.shape) for p in (*params, embedding)])
        tm.step()
    assign(params, [torch.ones(p.shape) for p in params])
    embedding.grad = _sparse(embedding)
    before = Snapshot(tm, [*params, embedding])
    with pytest.raises(RuntimeError, match="sparse"):
        tm.step()
    before.assert_unchanged("refused step")


def test_first_step_skipped_by_found_inf_changes_nothing(backend, device):
    """capturable=True and optimizer.found_inf set (as GradScaler sets it) on the very first
    step: no param, count or buffer changes; the next step is SGD's first (buf = g)."""
    shapes = [(), (4,), (2, 3)]
    pair = _pair(shapes, backend, device, tm_options={"momentum": M, "capturable": True},
                 sgd_options={"momentum": M})
    tm = pair.tmsgd
    initial = [p.detach().clone() for p in pair.ours]
    grads = fixed_grads(shapes, 4)
    assign(pair.ours, grads[0])
    tm.grad_scale, tm.found_inf = None, torch.ones((), device=device)
    tm.step()
    for i, (p, before) in enumerate(zip(pair.ours, initial)):
        assert torch.equal(p, before), f"param {i} changed in a skipped step"
        state = tm.state.get(p, {})
        assert int(state.get("step", 0)) == 0, f"param {i} counted a skipped step"
    tm.found_inf = torch.zeros((), device=device)
    for k in range(1, 4):
        pair.step(grads[k])
        assert all(int(tm.state[p]["step"]) == k for p in pair.ours)


@pytest.mark.parametrize("capturable", [False, True])
def test_grad_scaler_skipping_the_first_step(backend, device, capturable):
    """GradScaler finds an inf in the first step's gradients: with capturable=True it hands
    TMSGD found_inf and the step is skipped inside it, otherwise the scaler does not call step.
    Either way no param or count changes, and the following steps (gradients unscaled exactly:
    the scale is a power of two) are those of torch.optim.SGD without the skipped one."""
    shapes = [(4,), (2, 3)]
    pair = _pair(shapes, backend, device, tm_options={"momentum": M, "capturable": capturable},
                 sgd_options={"momentum": M})
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 12)
    grads = fixed_grads(shapes, 5)
    grads[0][1][0, 1] = float("inf")
    initial = [p.detach().clone() for p in pair.ours]
    for k, step_grads in enumerate(grads):
        pair.tmsgd.zero_grad()
        loss = sum((p * g.to(p.dtype).to(device)).sum() for p, g in zip(pair.ours, step_grads))
        scaler.scale(loss).backward()
        scaler.step(pair.tmsgd)
        scaler.update()
        if k == 0:
            assert scaler.get_scale() == 2.0 ** 11  # the scaler saw the inf
            assert all(torch.equal(p, q) for p, q in zip(pair.ours, initial))
            assert all(int(pair.tmsgd.state.get(p, {}).get("step", 0)) == 0
                       for p in pair.ours)
            continue
        assign(pair.theirs, step_grads)
        pair.sgd.step()
        pair.drift.observe(pair.theirs, [pair.sgd.state[p]["momentum_buffer"]
                                         for p in pair.theirs], [p.grad for p in pair.theirs])
        pair.drift.step(F32, LR, momentum=True)
        pair.check(f"step {k}")
        assert all(int(pair.tmsgd.state[p]["step"]) == k for p in pair.ours)


@pytest.mark.parametrize("dampening", [0.0, 0.5])
def test_late_momentum_whose_first_step_is_skipped(backend, device, dampening):
    """Momentum turned on after 3 steps, and its first step skipped by found_inf (capturable,
    as GradScaler drives it): the step after it is still the buffer's first, so it must start
    the buffer as g (torch.optim.SGD, which never ran the skipped step, does), whatever the
    dampening."""
    shapes = [(4,), (3,)]
    pair = _pair(shapes, backend, device, tm_options={"capturable": True,
                                                      "dampening": dampening},
                 sgd_options={"dampening": dampening})
    tm = pair.tmsgd
    grads = fixed_grads(shapes, 7)
    tm.found_inf = torch.zeros((), device=device)
    for k in range(3):
        pair.step(grads[k])
    tm.param_groups[0]["momentum"] = pair.sgd.param_groups[0]["momentum"] = M
    tm.found_inf = torch.ones((), device=device)
    before = [p.detach().clone() for p in pair.ours]
    assign(pair.ours, grads[3])
    tm.step()
    assert all(torch.equal(p, q) for p, q in zip(pair.ours, before))
    assert all(int(tm.state[p]["step"]) == 3 for p in pair.ours)
    tm.found_inf = torch.zeros((), device=device)
    for k in range(4, 7):
        pair.step(grads[k])


# ----------------------------------------------------------------------- 6. smaller items


@pytest.mark.parametrize("lr", [torch.tensor([0.05]), torch.tensor([1], dtype=torch.int32),
                                torch.tensor(1)], ids=["float (1,)", "int32 (1,)", "int64"])
def test_lr_tensor_of_shape_1_or_integer_dtype_is_sgd(backend, device, lr):
    """lr as a one-element tensor of shape (1,) (a 0-dim param must stay 0-dim) or of an
    integer dtype is accepted, as torch.optim.SGD accepts it, and gives SGD's steps."""
    shapes = [(), (3,), (2, 2)]
    ours = make_params(shapes, F32, device)
    theirs = twin_params(ours)
    tm = TMSGD(ours, lr=lr.clone(), coefficients=IDENTITY, momentum=M, backend=backend)
    pair = SgdPair(ours, theirs, tm, torch.optim.SGD(theirs, lr=lr.clone(), momentum=M,
                                                     foreach=False))
    for step_grads in fixed_grads(shapes, 4, scale=0.05):
        pair.step(step_grads)
        assert ours[0].shape == ()


def test_lr_tensor_of_shape_1_against_the_oracle(backend, device):
    params = make_params([(), (5,)], F32, device)
    tm = TMSGD(params, lr=torch.tensor([LR]), momentum=M, backend=backend)
    run = _OracleRun(params, tm)
    for step_grads in fixed_grads([(), (5,)], 5):
        run.step(step_grads, [{"lr": LR, "momentum": M}] * 2)


def test_switch_step_beyond_int64_is_refused():
    (p,) = make_params([(3,)], F32, "cpu")
    with pytest.raises(ValueError, match="switch_step"):
        TMSGD([p], switch_step=2**63)
    TMSGD([p], switch_step=2**63 - 1)  # the largest count the kernels hold
    optimizer = TMSGD([p])
    with pytest.raises(ValueError, match="switch_step"):
        optimizer.add_param_group({"params": make_params([(2,)], F32, "cpu"),
                                   "switch_step": 2**63})
    assert len(optimizer.param_groups) == 1


@pytest.mark.parametrize("options", [{}, {"momentum": M, "history_dtype": torch.bfloat16,
                                          "capturable": True}])
def test_functional_init_state_of_no_params(options):
    assert functional.init_state([], **options) == {
        "delta_even": [], "delta_odd": [], "momentum_buffers": [], "steps": []}


def test_inf_gradient_during_warm_up_is_sgd(backend, device):
    """An inf gradient during warm-up (switch_step=5, paper coefficients) gives SGD's result: an
    infinite weight where SGD has one and SGD's values elsewhere, never NaN, although the
    history then holds an infinite step (0 * inf would be NaN)."""
    shapes = [(6,), (2, 3)]
    ours = make_params(shapes, F32, device)
    theirs = twin_params(ours)
    tm = TMSGD(ours, lr=LR, switch_step=5, backend=backend)
    pair = SgdPair(ours, theirs, tm, _sgd(theirs))
    grads = fixed_grads(shapes, 5)
    grads[0][0][1] = float("inf")
    grads[1][1][1, 2] = -float("inf")
    for step_grads in grads:
        pair.step(step_grads)
        assert not any(p.isnan().any() for p in ours)
    assert ours[0][1] == -float("inf") and ours[1][1, 2] == float("inf")


@pytest.mark.parametrize("direction", [{}, {"dampening": 0.5}, {"nesterov": True}],
                         ids=["plain", "dampening", "nesterov"])
def test_nan_momentum_buffer_at_count_0_is_not_read(backend, device, direction):
    """A momentum buffer full of NaN in the state of a param at count 0 (never stepped) is not
    read: the first step takes buf = g, as a fresh torch.optim.SGD does."""
    shapes = [(4,), (2, 3)]
    pair = _pair(shapes, backend, device, tm_options={"momentum": M, **direction},
                 sgd_options={"momentum": M, **direction})
    for p in pair.ours:
        pair.tmsgd.state[p] = {
            "step": torch.tensor(0), "delta_even": torch.zeros_like(p),
            "delta_odd": torch.zeros_like(p),
            "momentum_buffer": torch.full_like(p, float("nan"))}
    for step_grads in fixed_grads(shapes, 3):
        pair.step(step_grads)
        assert not any(pair.tmsgd.state[p]["momentum_buffer"].isnan().any() for p in pair.ours)


def test_auto_without_the_extension_warns_once(monkeypatch):
    """backend="auto" on the CPU without a usable extension falls back to the torch backend
    with one RuntimeWarning (per device type), however many optimizers and steps follow."""
    monkeypatch.setattr(native_extension, "load_error", "the test says it is not built")
    monkeypatch.setattr(implementations, "_warned_fallback", set())
    params = make_params([(3,)], F32, "cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = TMSGD(params, lr=LR)
        second = TMSGD(twin_params(params), lr=LR)
        for optimizer in (first, second):
            for group in optimizer.param_groups:
                assign(group["params"], [torch.ones(3)])
            optimizer.step()
            optimizer.step()
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1, [str(w.message) for w in runtime]
    assert "the test says it is not built" in str(runtime[0].message)
    assert "pure-PyTorch" in str(runtime[0].message)
    assert implementations.choose("auto", torch.device("cpu")) == "torch"
    for optimizer in (first, second):
        assert int(optimizer.state[optimizer.param_groups[0]["params"][0]]["step"]) == 2
