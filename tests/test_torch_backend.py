"""The `torch` backend called directly (kernel contract v2), against the float64 oracle.

Both of its paths run: `host_step` (counts read on the host, foreach ops) and `device_step`
(counts used on the device with torch.where, the path torch.compile and capturable steps take),
which on this CPU-only machine is called by name. Tolerances come from the dtypes
(trajectory.Tolerance).
"""

from __future__ import annotations

import pytest
import torch
from oracle import OracleParam, oracle_step
from torch._dynamo.testing import CompileCounterWithBackend
from trajectory import ODD_SHAPES, Tolerance, assert_close, make_grads, make_params

from tmsgd_kernels.backends import torch_backend
from tmsgd_kernels.step_scalars import StepScalars

PATHS = {"host": torch_backend.host_step, "device": torch_backend.device_step}
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
OPTIONS = {
    "plain": {},
    "momentum": dict(momentum=0.9),
    "dampening-nesterov-decay": dict(momentum=0.8, dampening=0.3, nesterov=True,
                                     weight_decay=1e-2),
    "maximize-warmup": dict(maximize=True, switch_step=3, momentum=0.5),
}


class Lists:
    """The argument lists of one call, as the contract describes them, with the float64 oracle
    of every param beside them. `counts` starts params at different step counts (with zero
    history, which is what the oracle's fresh state means too)."""

    def __init__(self, shapes, dtype, history_dtype=None, momentum=0.0, counts=None):
        self.params = [p.detach() for p in make_params(shapes, dtype, "cpu")]
        history_dtype = history_dtype or dtype
        self.delta_even = [torch.zeros_like(p, dtype=history_dtype) for p in self.params]
        self.delta_odd = [torch.zeros_like(p, dtype=history_dtype) for p in self.params]
        self.buffers = [torch.zeros_like(p) for p in self.params] if momentum else []
        counts = counts or [0] * len(self.params)
        self.steps = [torch.tensor(c, dtype=torch.int64) for c in counts]
        self.oracle = [OracleParam(p) for p in self.params]
        for o, c in zip(self.oracle, counts):
            o.step = c
            if momentum and c:
                o.momentum_buffer = torch.zeros_like(o.weight)
        self.tolerance = Tolerance(dtype, history_dtype, momentum)
        self.taken = 0  # steps not skipped: each adds its rounding to the weights

    def tensors(self) -> list[torch.Tensor]:
        return [*self.params, *self.delta_even, *self.delta_odd, *self.buffers, *self.steps]

    def step(self, path, grads, lr=0.05, grad_scale=None, skip=False, **options) -> None:
        # Shape (1,), as GradScaler makes them.
        scale = None if grad_scale is None else torch.tensor([grad_scale])
        found_inf = torch.tensor([float(skip)]) if grad_scale is not None or skip else None
        path(self.params, grads, self.delta_even, self.delta_odd, self.buffers, self.steps,
             StepScalars(lr, **options), scale, found_inf)
        for o, g in zip(self.oracle, grads):
            oracle_step(o, g, lr=float(lr), grad_scale=grad_scale, found_inf=skip, **options)
        self.tolerance.observe(self.oracle)
        self.taken += not skip

    def check(self, what: str) -> None:
        for i, o in enumerate(self.oracle):
            where = f"{what}, param {i} {tuple(o.weight.shape)}"
            count = int(self.steps[i])
            assert count == o.step, f"{where}: count {count}, oracle {o.step}"
            slots = (self.delta_even[i], self.delta_odd[i])
            d2, d1 = slots[count % 2], slots[1 - count % 2]
            assert_close(self.params[i], o.weight, self.tolerance.weight(self.taken),
                         f"{where} weight")
            assert_close(d1, o.d1, self.tolerance.history(), f"{where} d1")
            assert_close(d2, o.d2, self.tolerance.history(), f"{where} d2")
            if self.buffers and o.momentum_buffer is not None:
                assert_close(self.buffers[i], o.momentum_buffer, self.tolerance.buffer(),
                             f"{where} momentum buffer")


def run(lists: Lists, path, steps: int, grad_scale=None, skip=(), **options) -> None:
    all_grads = make_grads(lists.params, steps, scale=grad_scale or 1.0)
    for k, grads in enumerate(all_grads):
        lists.step(path, grads, grad_scale=grad_scale, skip=k in skip, **options)
        lists.check(f"step {k}")


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
@pytest.mark.parametrize("history_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_pair(dtype, history_dtype, path):
    lists = Lists(ODD_SHAPES, dtype, history_dtype, momentum=0.9)
    run(lists, path, 20, momentum=0.9, switch_step=2)


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_every_option(path, options, dtype):
    lists = Lists(ODD_SHAPES, dtype, momentum=options.get("momentum", 0.0))
    run(lists, path, 12, **options)


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_grad_scale_and_skipped_steps(path):
    """found_inf skips whole steps, the first included; grads are divided by grad_scale."""
    lists = Lists(ODD_SHAPES, torch.float32, momentum=0.9)
    run(lists, path, 8, grad_scale=1024.0, skip=(0, 3), momentum=0.9, switch_step=2)


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_found_inf_changes_nothing(path):
    lists = Lists([(5,), (3, 2)], torch.float32, momentum=0.9, counts=[3, 6])
    for t in [*lists.delta_even, *lists.delta_odd, *lists.buffers]:
        t.copy_(torch.randn(t.shape))
    before = [t.clone() for t in lists.tensors()]
    grads = make_grads(lists.params, 1)[0]
    path(lists.params, grads, lists.delta_even, lists.delta_odd, lists.buffers, lists.steps,
         StepScalars(0.05, momentum=0.9), torch.tensor(8.0), torch.tensor(float("inf")))
    for old, new in zip(before, lists.tensors()):
        assert torch.equal(old, new)


LR_FORMS = {
    "0-dim": lambda: torch.tensor(0.05),
    "shape-(1,)-fp64": lambda: torch.tensor([0.05], dtype=torch.float64),
    "integer": lambda: torch.tensor([1]),
}


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
@pytest.mark.parametrize("lr", LR_FORMS.values(), ids=LR_FORMS.keys())
def test_tensor_lr(path, lr):
    lists = Lists(ODD_SHAPES, torch.float32, momentum=0.5)
    run_lr = lr()
    for k, grads in enumerate(make_grads(lists.params, 6)):
        lists.step(path, grads, lr=run_lr, momentum=0.5, switch_step=1)
        lists.check(f"step {k}")


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_different_counts_in_one_call(path):
    """Every combination of slot parity, first momentum step and warm-up in one call."""
    shapes = [(3,), (4,), (5,), (2, 3), (7,), ()]
    lists = Lists(shapes, torch.float32, momentum=0.9, counts=[0, 1, 2, 3, 4, 5])
    lists.steps[::2] = [s.reshape(1) for s in lists.steps[::2]]  # counts of shape (1,) too
    run(lists, path, 5, momentum=0.9, switch_step=3)


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_nan_buffer_is_not_read_on_the_first_step(path):
    lists = Lists([(3,), (4097,)], torch.float32, momentum=0.9, counts=[0, 2])
    lists.buffers[0].fill_(float("nan"))
    run(lists, path, 3, momentum=0.9, dampening=0.1)
    assert torch.isfinite(lists.buffers[0]).all()


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_warmup_is_sgd_despite_inf(path):
    """During warm-up the step is SGD's, whatever the history holds: an inf history, and the
    -inf step an inf gradient leaves in it, give SGD's weights, not NaN."""
    lists = Lists([(6,)], torch.float32)
    lists.delta_even[0].fill_(float("inf"))
    lists.delta_odd[0].fill_(float("-inf"))
    sgd_weight = lists.params[0].clone()
    sgd = torch.optim.SGD([sgd_weight], lr=0.05)
    for k, (grad,) in enumerate(make_grads(lists.params, 3)):
        if k == 0:
            grad[2] = float("inf")
        path(lists.params, [grad], lists.delta_even, lists.delta_odd, [], lists.steps,
             StepScalars(0.05, switch_step=3))
        sgd_weight.grad = grad
        sgd.step()
        assert not lists.params[0].isnan().any()
        # Each step rounds lr * g and W (SGD: W alone) to float32: an ulp of each per step.
        finite = sgd_weight.isfinite()
        scale = sgd_weight[finite].abs().max() + 0.05 * grad[finite].abs().max()
        assert_close(lists.params[0], sgd_weight, (k + 1) * torch.finfo().eps * float(scale),
                     f"step {k} weight")


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_strided_params_and_grads(path):
    """A transposed param with history of its strides, and grads of other strides."""
    lists = Lists([(6, 5), (4, 3)], torch.float32, momentum=0.9)
    for i in range(2):
        lists.params[i] = lists.params[i].t().contiguous().t()
        lists.delta_even[i] = torch.zeros_like(lists.params[i])
        lists.delta_odd[i] = torch.zeros_like(lists.params[i])
        lists.buffers[i] = torch.zeros_like(lists.params[i])
    assert not lists.params[0].is_contiguous() and not lists.delta_odd[0].is_contiguous()
    for k, grads in enumerate(make_grads(lists.params, 4)):  # contiguous grads
        lists.step(path, grads, momentum=0.9)
        lists.check(f"step {k}")


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
@pytest.mark.parametrize("wrong", ["shape", "dtype", "count"])
def test_mismatched_grads_raise_before_any_change(path, wrong):
    lists = Lists([(3,), (4,)], torch.float32)
    grads = [torch.ones(3), torch.ones(4)]
    if wrong == "shape":
        grads[1] = torch.ones(1)
    elif wrong == "dtype":
        grads[1] = grads[1].double()
    else:
        grads.pop()
    before = [t.clone() for t in lists.tensors()]
    with pytest.raises(ValueError, match="grads"):
        path(lists.params, grads, lists.delta_even, lists.delta_odd, [], lists.steps,
             StepScalars(0.05))
    assert all(torch.equal(a, b) for a, b in zip(before, lists.tensors()))


@pytest.mark.parametrize("dtype, history_dtype", [
    (torch.float32, torch.float32), (torch.bfloat16, torch.float32),
    (torch.float32, torch.float16), (torch.float32, torch.float64),
    (torch.float64, torch.float32),
], ids=str)
def test_host_and_device_paths_are_bitwise_equal(dtype, history_dtype):
    """With a float lr both paths run the same elementwise ops: identical bits, every option
    and mixed counts included."""
    twins = [Lists(ODD_SHAPES, dtype, history_dtype, momentum=0.8, counts=[0, 1, 2, 3, 4, 5])
             for _ in PATHS]
    options = dict(momentum=0.8, dampening=0.1, nesterov=True, weight_decay=1e-2,
                   maximize=True, switch_step=3)
    for grads in make_grads(twins[0].params, 6):
        for lists, path in zip(twins, PATHS.values()):
            path(lists.params, grads, lists.delta_even, lists.delta_odd, lists.buffers,
                 lists.steps, StepScalars(0.05, **options), torch.tensor(2.0),
                 torch.tensor(0.0))
    for host, device in zip(*(lists.tensors() for lists in twins)):
        assert torch.equal(host, device)


def test_step_takes_the_host_path_for_cpu_counts(monkeypatch):
    taken = []
    monkeypatch.setattr(torch_backend, "host_step", lambda *args: taken.append("host"))
    monkeypatch.setattr(torch_backend, "device_step", lambda *args: taken.append("device"))
    lists = Lists([(3,)], torch.float32)
    torch_backend.step(lists.params, [torch.ones(3)], lists.delta_even, lists.delta_odd, [],
                       lists.steps, StepScalars(0.05))
    assert taken == ["host"]


def test_compiled_step_matches_oracle_without_recompiles():
    """torch.compile(fullgraph=True) traces the device path: one graph for every step, with
    different counts per param, a tensor lr changed by a schedule and skipped steps."""
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(torch_backend.step, backend=counter, fullgraph=True)
    lists = Lists([(), (3,), (257,)], torch.float32, momentum=0.9, counts=[0, 1, 4])
    lr = torch.tensor(0.05)
    options = dict(momentum=0.9, switch_step=2)
    for k, grads in enumerate(make_grads(lists.params, 5, scale=64.0)):
        lr.fill_(0.05 / (k + 1))
        skip = k == 2
        compiled(lists.params, grads, lists.delta_even, lists.delta_odd, lists.buffers,
                 lists.steps, StepScalars(lr, **options), torch.tensor(64.0),
                 torch.tensor(float(skip)))
        for o, g in zip(lists.oracle, grads):
            oracle_step(o, g, lr=lr.item(), grad_scale=64.0, found_inf=skip, **options)
        lists.tolerance.observe(lists.oracle)
        lists.taken += not skip
        lists.check(f"compiled step {k}")
    assert counter.frame_count == 1
