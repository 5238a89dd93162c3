"""Shared by test_lifecycle.py and test_load_state_dict.py: stepping TMSGD beside
torch.optim.SGD or the float64 oracle, the worst-case rounding drift between TMSGD and SGD, and
snapshots that show a refused call changed nothing."""

from __future__ import annotations

import copy

import torch
from oracle import OracleParam, oracle_step

IDENTITY = (1.0, 0.0, 0.0)  # TM-SGD with these coefficients is torch.optim.SGD


def heavy_ball(m: float) -> tuple[float, float, float]:
    """The coefficients of heavy-ball momentum m: SGD(momentum=m, dampening=0)."""
    return (1.0 + m, -m, 0.0)


def fixed_grads(shapes, steps: int, seed: int = 1, scale: float = 1.0) -> list[list]:
    """Float64 gradients fixed in advance (converted to each param's dtype when assigned), so
    every side of a comparison sees the same numbers."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=generator, dtype=torch.float64) * scale for s in shapes]
            for _ in range(steps)]


def assign(params, grads) -> None:
    """p.grad = g in p's dtype and device (None: no gradient this step)."""
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.to(dtype=p.dtype, device=p.device)


def twin_params(params) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


class SgdDrift:
    """Worst-case |TMSGD - torch.optim.SGD| under the identity coefficients, accumulated step by
    step from the rounding of the dtype each step runs in (never tuned to pass).

    Both compute the same real-number trajectory and differ only in rounding; the gradients are
    the same numbers on both sides. Per step each side rounds the momentum buffer at most twice
    (SGD: buf * m, then + (1 - dampening) g; TMSGD once or twice), each within half an ulp of
    at most B = max(|buf|, |g|) seen so far, so the buffers part by at most 2 eps B more per
    step (m <= 1 keeps earlier differences from growing). The heavy-ball form keeps
    d = -lr buf instead of buf: the same bound in units of buf. The weight moves by lr times
    the buffer, and each side rounds W (half an ulp of W) and SGD's or TMSGD's step (half an
    ulp of lr B; with nesterov u = g + m buf is rounded once more, up to 2 B):
        E_buf += 2 eps B                            (only with momentum)
        E_w   += lr E_buf + eps (W + 3 lr B)        (lr E_buf only with momentum)
    A conversion to another dtype rounds both sides once more (the two may round to adjacent
    values): E_w += eps W, E_buf += eps B.
    """

    def __init__(self) -> None:
        self.weight = 0.0
        self.buffer = 0.0
        self.max_w = 0.0
        self.max_b = 0.0

    def observe(self, tensors=(), buffers=(), grads=()) -> None:
        """Record the magnitudes of the reference (SGD) weights, buffers and gradients."""
        self.max_w = max(self.max_w, _largest_finite(tensors))
        self.max_b = max(self.max_b, _largest_finite(t for t in (*buffers, *grads)
                                                     if t is not None))

    def step(self, dtype: torch.dtype, lr: float, momentum: bool) -> None:
        e = eps(dtype)
        if momentum:
            self.buffer += 2 * e * self.max_b
            self.weight += lr * self.buffer
        self.weight += e * (self.max_w + 3 * lr * self.max_b)

    def convert(self, dtype: torch.dtype) -> None:
        e = eps(dtype)
        self.weight += e * self.max_w
        self.buffer += e * self.max_b


class SgdPair:
    """TMSGD under the identity coefficients and torch.optim.SGD over twin params (the lists
    `ours` and `theirs`, which a test may change), stepped on the same gradients and compared
    after every step: weights and momentum buffers within SgdDrift."""

    def __init__(self, ours, theirs, tmsgd, sgd) -> None:
        self.ours, self.theirs = ours, theirs
        self.tmsgd, self.sgd = tmsgd, sgd
        self.drift = SgdDrift()
        self.steps = 0

    def step(self, grads, sgd_steps: bool = True) -> None:
        """One step of both on `grads` (None: no gradient), then the comparison."""
        assign(self.ours, grads)
        assign(self.theirs, grads)
        self.tmsgd.step()
        if sgd_steps:
            self.sgd.step()
        self.steps += 1
        buffers = [self.sgd.state[p].get("momentum_buffer") for p in self.theirs
                   if p in self.sgd.state]
        self.drift.observe(self.theirs, buffers, [p.grad for p in self.theirs])
        dtype = max((p.dtype for p in self.theirs), key=eps)  # the least precise
        lr = max(float(g["lr"]) for g in self.sgd.param_groups)
        momentum = any(g["momentum"] != 0 for g in self.sgd.param_groups)
        self.drift.step(dtype, lr, momentum)
        self.check(f"step {self.steps}")

    def check(self, what: str) -> None:
        for i, (a, b) in enumerate(zip(self.ours, self.theirs, strict=True)):
            assert_within(a, b, self.drift.weight, f"{what}: param {i} {tuple(a.shape)}")
            ours = self.tmsgd.state.get(a, {}).get("momentum_buffer")
            theirs = self.sgd.state[b].get("momentum_buffer") if b in self.sgd.state else None
            if ours is not None and theirs is not None:
                assert ours.dtype == a.dtype, f"{what}: param {i} buffer dtype {ours.dtype}"
                assert_within(ours, theirs, self.drift.buffer, f"{what}: param {i} buffer")


def _largest_finite(tensors) -> float:
    """The largest finite magnitude (an inf that both sides must match exactly, see
    assert_within, says nothing about rounding)."""
    largest = 0.0
    for t in tensors:
        t = t.detach()
        t = t[t.isfinite()]
        if t.numel():
            largest = max(largest, t.abs().max().item())
    return largest


def assert_within(actual, expected, atol: float, what: str) -> None:
    """|actual - expected| <= atol elementwise, in float64 (infinities must match exactly)."""
    actual = actual.detach().to(torch.float64).cpu()
    expected = expected.detach().to(torch.float64).cpu()
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol,
                               msg=lambda m: f"{what} (atol {atol:.3g}): {m}")


def oracle_step_sgd_rules(o: OracleParam, grad, **options) -> None:
    """oracle_step, where momentum that starts after the param has taken steps starts as
    torch.optim.SGD's does (buf = g); the oracle itself only starts a buffer at step 0."""
    if options.get("momentum", 0.0) and o.momentum_buffer is None and o.step > 0:
        o.momentum_buffer = torch.zeros_like(o.weight)
        options = {**options, "dampening": 0.0}  # 0 * m + 1 * g is g exactly
    oracle_step(o, grad, **options)


def oracle_with_history(weight, newest, older) -> OracleParam:
    """An oracle at `weight` whose last two steps were `newest` (d1) and `older` (d2)."""
    o = OracleParam(weight)
    o.previous = o.weight - newest.detach().to(torch.float64).cpu().reshape(o.weight.shape)
    o.before = o.previous - older.detach().to(torch.float64).cpu().reshape(o.weight.shape)
    return o


def newest_slot(count: int) -> str:
    """The state key holding the newest step after `count` steps (step k writes slot k % 2)."""
    return "delta_even" if (count - 1) % 2 == 0 else "delta_odd"


def to_version1(state_dict: dict) -> dict:
    """A version-1 TMSGD checkpoint (per param step, d1 = newest step, d2 = the one before)
    built from a v2 state_dict: d1 is the slot written last."""
    converted = copy.deepcopy(state_dict)
    for entry in converted["state"].values():
        count = int(entry["step"])
        newest = newest_slot(count)
        older = "delta_odd" if newest == "delta_even" else "delta_even"
        entry["d1"], entry["d2"] = entry.pop(newest), entry.pop(older)
    return converted


class Snapshot:
    """Everything a refused call must leave alone: the params' values, the state's dicts and
    tensors (identity and value), the param_groups (identity and value)."""

    def __init__(self, optimizer, params) -> None:
        self.optimizer = optimizer
        self.params = list(params)
        self.values = [p.detach().clone() for p in self.params]
        self.state = {p: (s, dict(s), {k: _clone(v) for k, v in s.items()})
                      for p, s in optimizer.state.items()}
        self.groups = [(g, dict(g), copy.deepcopy({k: v for k, v in g.items() if k != "params"}))
                       for g in optimizer.param_groups]

    def assert_unchanged(self, what: str) -> None:
        optimizer = self.optimizer
        for i, (p, before) in enumerate(zip(self.params, self.values)):
            assert p.dtype == before.dtype and p.shape == before.shape, f"{what}: param {i}"
            assert torch.equal(p.detach(), before), f"{what}: param {i} changed"
        assert set(optimizer.state) == set(self.state), f"{what}: state gained or lost params"
        for p, (s, entries, values) in self.state.items():
            assert optimizer.state[p] is s, f"{what}: a state dict was replaced"
            assert s.keys() == entries.keys(), f"{what}: state keys changed"
            for key, value in entries.items():
                assert s[key] is value, f"{what}: state[{key!r}] was replaced"
                _assert_equal(s[key], values[key], f"{what}: state[{key!r}]")
        assert len(optimizer.param_groups) == len(self.groups), f"{what}: groups changed"
        for g, (group, entries, values) in zip(optimizer.param_groups, self.groups):
            assert g is group and g.keys() == entries.keys(), f"{what}: a group changed"
            assert g["params"] is entries["params"], f"{what}: a group's params changed"
            for key, value in values.items():
                _assert_equal(g[key], value, f"{what}: group[{key!r}]")


def _clone(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)


def _assert_equal(actual, expected, what: str) -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), what
        assert actual.dtype == expected.dtype and actual.device == expected.device, what
        assert torch.equal(actual, expected), what
    else:
        assert actual == expected and type(actual) is type(expected), what


def assert_same_run(params_a, opt_a, params_b, opt_b, what: str) -> None:
    """Params and every state tensor bit for bit equal (and of equal dtype)."""
    for i, (a, b) in enumerate(zip(params_a, params_b, strict=True)):
        assert a.dtype == b.dtype and torch.equal(a.detach(), b.detach()), f"{what}: param {i}"
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert state_a.keys() == state_b.keys(), f"{what}: states of different params"
    for index in state_a:
        assert state_a[index].keys() == state_b[index].keys(), f"{what}: param {index} keys"
        for key, value in state_a[index].items():
            _assert_equal(state_b[index][key].cpu(), value.cpu(), f"{what}: param {index} {key}")
