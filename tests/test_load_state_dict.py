"""Saving and loading the state model: bit-exact resume (state_dict, torch.save, deepcopy,
pickle), checkpoints of torch.optim.SGD and of TMSGD version 1, older group keys, dtypes kept,
hooks, and bad checkpoints refused before anything changes (the full table of corruptions is
tests/test_corrupt_checkpoints.py)."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from lifecycle_helpers import (
    IDENTITY,
    SgdPair,
    Snapshot,
    assert_same_run,
    assert_within,
    assign,
    fixed_grads,
    newest_slot,
    to_version1,
    twin_params,
)
from oracle import OracleParam, oracle_step
from trajectory import Tolerance, make_params

from tmsgd_kernels import TMSGD

SHAPES = [(), (0,), (3,), (7, 5)]
OPTIONS = {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "switch_step": 2}
F32, BF16, F16, F64 = torch.float32, torch.bfloat16, torch.float16, torch.float64


def _run(params, optimizer, grads) -> None:
    for step_grads in grads:
        assign(params, step_grads)
        optimizer.step()


def _lockstep(first, second, grads) -> None:
    """Step two (params, optimizer) pairs on the same gradients, one step each in turn (so a
    tensor shared between them by mistake would show), comparing bit for bit after each."""
    for k, step_grads in enumerate(grads):
        for params, optimizer in (first, second):
            assign(params, step_grads)
            optimizer.step()
        assert_same_run(*first, *second, f"step {k} after the resume")


def _trained(backend, device, dtype=F32, history_dtype=None, steps=5, shapes=SHAPES, **extra):
    params = make_params(shapes, dtype, device)
    optimizer = TMSGD(params, backend=backend, history_dtype=history_dtype,
                      **{**OPTIONS, **extra})
    _run(params, optimizer, fixed_grads(shapes, steps))
    return params, optimizer


# ------------------------------------------------------------------------ 3. bit-exact resume


DTYPE_PAIRS = [(F32, F32), (BF16, F32), (F16, F32), (BF16, BF16), (F64, F64)]


@pytest.mark.parametrize("how", ["state_dict", "torch.save"])
@pytest.mark.parametrize("param_dtype, history_dtype", DTYPE_PAIRS,
                         ids=[f"{str(p)[6:]}-{str(h)[6:]}" for p, h in DTYPE_PAIRS])
def test_resume_is_bit_exact(backend, device, param_dtype, history_dtype, how):
    """Run 5 steps (odd: the newest step sits in delta_even), save params and optimizer, build a
    new model and optimizer (other hyperparameters: the checkpoint's win), load, continue: bit
    for bit the uninterrupted run, every state tensor in its saved dtype."""
    params, optimizer = _trained(backend, device, param_dtype, history_dtype)
    checkpoint = {"params": [p.detach() for p in params], "optimizer": optimizer.state_dict()}
    if how == "torch.save":
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        buffer.seek(0)
        checkpoint = torch.load(buffer, weights_only=True)
    resumed = [torch.nn.Parameter(t.clone()) for t in checkpoint["params"]]
    fresh = TMSGD(resumed, lr=1.0, backend=backend)
    fresh.load_state_dict(checkpoint["optimizer"])
    group = fresh.param_groups[0]
    assert {key: group[key] for key in OPTIONS} == OPTIONS
    assert group["history_dtype"] == history_dtype
    for p in resumed:
        state = fresh.state[p]
        assert state["step"].dtype == torch.int64 and int(state["step"]) == 5
        assert state["step"].device.type == "cpu"
        assert state["delta_even"].dtype == state["delta_odd"].dtype == history_dtype
        assert state["momentum_buffer"].dtype == param_dtype
    _lockstep((params, optimizer), (resumed, fresh), fixed_grads(SHAPES, 3, seed=2))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copied_optimizer_continues_bit_exact(backend, device, how):
    """deepcopy / pickle of (params, optimizer) after 5 steps (bf16 params, fp32 history):
    the copy continues bit for bit as the original, sharing no tensor with it."""
    params, optimizer = _trained(backend, device, BF16, F32)
    if how == "deepcopy":
        copied_params, copied = copy.deepcopy((params, optimizer))
    else:
        copied_params, copied = pickle.loads(pickle.dumps((params, optimizer)))
    assert all(copied.state[p]["delta_even"].dtype == F32 for p in copied_params)
    assert_same_run(params, optimizer, copied_params, copied, "the copy")
    _lockstep((params, optimizer), (copied_params, copied), fixed_grads(SHAPES, 4, seed=2))


# ----------------------------------------------------------------- 4. other checkpoint formats


def _sgd_checkpoint(device, momentum):
    """torch.optim.SGD trained 4 steps; its last param never got a gradient (no state)."""
    shapes = [(3,), (2, 4), (5,)]
    params = make_params(shapes, F32, device)
    sgd = torch.optim.SGD(params, lr=0.05, momentum=momentum, foreach=False)
    for step_grads in fixed_grads(shapes, 4):
        assign(params, [*step_grads[:2], None])
        sgd.step()
    return shapes, params, sgd


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_checkpoint_continues_as_sgd(backend, device, momentum):
    """A checkpoint of torch.optim.SGD loads into TMSGD(coefficients=(1, 0, 0)): the momentum
    buffers carry over and the next steps are SGD's continued steps (a param without state
    starts with buf = g, as it does in SGD)."""
    shapes, theirs, sgd = _sgd_checkpoint(device, momentum)
    ours = twin_params(theirs)
    tm = TMSGD(ours, lr=1.0, coefficients=IDENTITY, momentum=0.5, backend=backend)
    tm.load_state_dict(sgd.state_dict())
    assert tm.param_groups[0]["momentum"] == momentum and tm.param_groups[0]["lr"] == 0.05
    if momentum:
        for a, b in zip(ours[:2], theirs[:2]):
            assert torch.equal(tm.state[a]["momentum_buffer"], sgd.state[b]["momentum_buffer"])
            assert int(tm.state[a]["step"]) == 1  # so the next step blends the buffer
    pair = SgdPair(ours, theirs, tm, sgd)
    for step_grads in fixed_grads(shapes, 4, seed=2):
        pair.step(step_grads)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_checkpoint_starts_the_paper_method_with_zero_history(backend, device, momentum):
    """The paper's switch from SGD to TM-SGD: a torch.optim.SGD checkpoint loaded into TMSGD
    with the paper's coefficients (missing from SGD's groups: the new optimizer's defaults)
    continues as the oracle started at the checkpoint's weights with zero history and SGD's
    momentum buffer (the first step blends it)."""
    shapes, theirs, sgd = _sgd_checkpoint(device, momentum)
    ours = twin_params(theirs)
    tm = TMSGD(ours, lr=1.0, backend=backend)
    tm.load_state_dict(sgd.state_dict())
    assert tm.param_groups[0]["coefficients"] == tm.defaults["coefficients"]
    oracles = [OracleParam(p) for p in ours]
    for o, b in zip(oracles, theirs):
        if b in sgd.state and momentum:
            o.momentum_buffer = sgd.state[b]["momentum_buffer"].double().cpu()
            o.step = 1
    tolerance = Tolerance(F32, F32, momentum)
    for k, step_grads in enumerate(fixed_grads(shapes, 5, seed=2)):
        assign(ours, step_grads)
        tm.step()
        for o, g in zip(oracles, step_grads):
            oracle_step(o, g.float().double(), lr=0.05, momentum=momentum)
        tolerance.observe(oracles)
        for i, (p, o) in enumerate(zip(ours, oracles)):
            assert_within(p, o.weight, tolerance.weight(k + 1), f"step {k}, param {i}")


@pytest.mark.parametrize("steps", [4, 5])
def test_version_1_checkpoint_continues_like_its_v2_run(backend, device, steps):
    """A version-1 TMSGD checkpoint (per param step, d1 = the newest step, d2 = the one before;
    built from a v2 run's state, d1 being the slot written last) loads into the v2 slots and
    continues bit for bit like the v2 run it came from, after an even and an odd count."""
    params, optimizer = _trained(backend, device, BF16, F32, steps=steps)
    old = to_version1(optimizer.state_dict())
    assert set(old["state"][2]) == {"step", "d1", "d2", "momentum_buffer"}
    resumed = twin_params(params)
    fresh = TMSGD(resumed, backend=backend)
    fresh.load_state_dict(old)
    for p, q in zip(params, resumed):
        for key in ("delta_even", "delta_odd"):
            assert fresh.state[q][key].dtype == F32
            assert torch.equal(fresh.state[q][key], optimizer.state[p][key]), key
    _lockstep((params, optimizer), (resumed, fresh), fixed_grads(SHAPES, 3, seed=2))


def test_group_keys_missing_from_an_older_checkpoint_get_defaults(backend, device):
    """Group keys a checkpoint predates take the loading optimizer's defaults (here the values
    the run had, so it continues bit for bit; then a different default shows it is used)."""
    missing = ("coefficients", "switch_step", "history_dtype", "capturable", "maximize",
               "nesterov")
    params, optimizer = _trained(backend, device)
    old = optimizer.state_dict()
    for group in old["param_groups"]:
        for key in missing:
            del group[key]
    resumed = twin_params(params)
    fresh = TMSGD(resumed, backend=backend, **OPTIONS)
    fresh.load_state_dict(old)
    assert all(fresh.param_groups[0][key] == fresh.defaults[key] for key in missing)
    _lockstep((params, optimizer), (resumed, fresh), fixed_grads(SHAPES, 3, seed=2))
    other = TMSGD(twin_params(params), backend=backend, switch_step=7)
    other.load_state_dict(old)
    assert other.param_groups[0]["switch_step"] == 7


@pytest.mark.parametrize("history_dtype", [F32, BF16], ids=str)
def test_each_state_tensor_keeps_its_dtype(backend, device, history_dtype):
    """Loading keeps each state tensor's dtype (torch.optim would cast the history of a bf16
    param to bf16): fp32 history stays fp32, bf16 stays bf16, the buffer stays bf16, the count
    int64 - with the values saved."""
    params, optimizer = _trained(backend, device, BF16, history_dtype)
    saved = copy.deepcopy(optimizer.state_dict())
    fresh = TMSGD(twin_params(params), lr=1.0, backend=backend)
    fresh.load_state_dict(saved)
    for index, p in enumerate(fresh.param_groups[0]["params"]):
        for key, value in saved["state"][index].items():
            loaded = fresh.state[p][key]
            assert loaded.dtype == value.dtype, f"param {index} {key}: {loaded.dtype}"
            assert torch.equal(loaded.cpu(), value.cpu()), f"param {index} {key}"
        assert fresh.state[p]["delta_even"].dtype == history_dtype


# ---------------------------------------------------------------------------------- hooks


def test_load_pre_hook_converts_before_validation_and_post_hook_runs_after(backend, device):
    """A load pre-hook sees the checkpoint before it is checked and may convert it (here it
    renames keys no format knows, which alone are refused); a post-hook runs after the state
    is in place. A refused load runs the pre-hook, not the post-hook."""
    params, optimizer = _trained(backend, device)
    renamed = copy.deepcopy(optimizer.state_dict())
    for entry in renamed["state"].values():
        entry["even"], entry["odd"] = entry.pop("delta_even"), entry.pop("delta_odd")
    resumed = twin_params(params)
    fresh = TMSGD(resumed, backend=backend)
    events = []

    def rename(opt, state_dict):
        events.append(("pre", len(opt.state)))
        state_dict = copy.copy(state_dict)
        state_dict["state"] = {
            index: {{"even": "delta_even", "odd": "delta_odd"}.get(key, key): value
                    for key, value in entry.items()}
            for index, entry in state_dict["state"].items()}
        return state_dict

    def after(opt):
        events.append(("post", [int(opt.state[p]["step"]) for p in resumed]))

    with pytest.raises(ValueError, match="keys"):
        fresh.load_state_dict(renamed)
    fresh.register_load_state_dict_post_hook(after)
    fresh.register_load_state_dict_pre_hook(lambda opt, sd: events.append("pre-hook ran"))
    with pytest.raises(ValueError, match="keys"):
        fresh.load_state_dict(renamed)
    assert events == ["pre-hook ran"] and len(fresh.state) == 0  # no post-hook
    fresh.register_load_state_dict_pre_hook(rename)
    fresh.load_state_dict(renamed)
    assert events == ["pre-hook ran", "pre-hook ran", ("pre", 0), ("post", [5] * len(resumed))]
    _lockstep((params, optimizer), (resumed, fresh), fixed_grads(SHAPES, 3, seed=2))


def test_load_pre_hook_may_change_the_checkpoint_in_place(backend, device):
    """A pre-hook that returns None and edits the dict it got (a shallow copy, as torch.optim
    gives it): its edit is what loads."""
    params, optimizer = _trained(backend, device)
    saved = optimizer.state_dict()
    fresh = TMSGD(twin_params(params), backend=backend)
    fresh.register_load_state_dict_pre_hook(
        lambda opt, sd: sd.update(param_groups=[{**sd["param_groups"][0], "lr": 0.125}]))
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["lr"] == 0.125
    assert saved["param_groups"][0]["lr"] == OPTIONS["lr"]


def test_state_dict_hooks_see_the_saved_format(backend, device):
    """state_dict's pre-hook runs first; its post-hook gets the saved format (per param step,
    delta_even, delta_odd, momentum_buffer; fp32 history of bf16 params) and may return another
    dict: here a version-1 checkpoint, which a new optimizer loads and continues bit exactly."""
    params, optimizer = _trained(backend, device, BF16, F32)
    events = []

    def post(opt, state_dict):
        events.append("post")
        for entry in state_dict["state"].values():
            assert set(entry) == {"step", "delta_even", "delta_odd", "momentum_buffer"}
            assert entry["delta_even"].dtype == F32 and entry["momentum_buffer"].dtype == BF16
            assert int(entry["step"]) == 5
        return to_version1(state_dict)

    handles = [optimizer.register_state_dict_pre_hook(lambda opt: events.append("pre")),
               optimizer.register_state_dict_post_hook(post)]
    saved = optimizer.state_dict()
    assert events == ["pre", "post"]
    for handle in handles:
        handle.remove()
    assert set(saved["state"][3]) == {"step", "d1", "d2", "momentum_buffer"}
    assert torch.equal(saved["state"][3]["d1"], optimizer.state[params[3]][newest_slot(5)])
    resumed = twin_params(params)
    fresh = TMSGD(resumed, backend=backend)
    fresh.load_state_dict(saved)
    _lockstep((params, optimizer), (resumed, fresh), fixed_grads(SHAPES, 3, seed=2))


# ------------------------------------------------------------------------- bad checkpoints


def _two_groups(backend, device, steps, lr):
    shapes = [(3,), (2, 4), (5,)]
    params = make_params(shapes, F32, device)
    optimizer = TMSGD([{"params": params[:2]}, {"params": params[2:], "lr": lr}],
                      backend=backend, **{**OPTIONS, "lr": lr})
    _run(params, optimizer, fixed_grads(shapes, steps))
    return shapes, params, optimizer


def _set(path, value):
    def corrupt(checkpoint):
        *parents, last = path
        target = checkpoint
        for key in parents:
            target = target[key]
        target[last] = value
    return corrupt


# One defect of each part (a state tensor, a count, a group): the full table of corruptions,
# each naming its key, is tests/test_corrupt_checkpoints.py; here the refused load must also
# leave the next steps, on every backend, those of a twin that never saw it.
BAD = {
    "wrong shape": (_set(("state", 1, "delta_even"), torch.zeros(4, 2)), "shape"),
    "negative count": (_set(("state", 2, "step"), torch.tensor(-1)), "step"),
    "invalid momentum": (_set(("param_groups", 1, "momentum"), -0.5), "momentum"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_checkpoint_is_refused_and_changes_nothing(backend, device, name):
    """A checkpoint (from another run: loading it would change every tensor) with one defect,
    often in the last group or param: a ValueError that says what is wrong, and nothing changes:
    not the state (dicts, tensors, counts), not the param_groups, not the next steps, which
    equal bit for bit those of a twin that never saw the load."""
    corrupt, message = BAD[name]
    shapes, params, optimizer = _two_groups(backend, device, steps=3, lr=0.05)
    _, twin, twin_optimizer = _two_groups(backend, device, steps=3, lr=0.05)
    # Any backend writes the same format; the torch backend writes it fastest.
    checkpoint = copy.deepcopy(_two_groups("torch", device, steps=6, lr=0.02)[2].state_dict())
    corrupt(checkpoint)
    before = Snapshot(optimizer, params)
    with pytest.raises(ValueError, match=message):
        optimizer.load_state_dict(checkpoint)
    before.assert_unchanged(f"after refusing a checkpoint with {name}")
    _lockstep((params, optimizer), (twin, twin_optimizer), fixed_grads(shapes, 2, seed=2))
