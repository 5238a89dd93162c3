"""The C++ CPU kernel of tmsgd_kernels::tmsgd_step (csrc/) against the float64 oracle, per step.

The op is called directly, with per-param lists (the kernel contract of tmsgd_kernels/ops.py):
every (param, history) dtype pair and option set, lr as a float and as one-element tensors, odd
sizes, unaligned views, many tensors split across threads, tensors with different counts in one
call, a garbage momentum buffer on the first step, found_inf, a channels_last param, opcheck, bad
arguments, and every CPU instruction-set copy of the kernel (in subprocesses, via
ATEN_CPU_CAPABILITY). The helpers are shared with tests/test_native_cuda.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from oracle import OracleParam, oracle_step
from trajectory import Tolerance, assert_close

import tmsgd_kernels  # noqa: F401  (defines the op's schema and loads the extension)
from tmsgd_kernels import native_extension
from tmsgd_kernels.coefficients import PAPER_COEFFICIENTS, delta_coefficients

OP = torch.ops.tmsgd_kernels.tmsgd_step.default
B1, B2 = delta_coefficients(PAPER_COEFFICIENTS)

_REASON = native_extension.load_error or (
    None if native_extension.has_kernel("CPU") else "the extension has no CPU kernel")
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"native cpu kernel: {_REASON}")

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
OPTIONS = {
    "plain": dict(),
    "momentum-decay-nesterov": dict(momentum=0.9, weight_decay=1e-2, nesterov=True),
    "dampening-maximize": dict(momentum=0.8, dampening=0.3, maximize=True),
    "warmup": dict(switch_step=3, weight_decay=1e-3),
    "warmup-momentum": dict(switch_step=2, momentum=0.5),
}
# 0-dim, empty, one element, fewer than a vector, not a multiple of any vector width, 2-D.
ODD_SHAPES = [(), (0,), (1,), (3,), (4097,), (7, 5)]


def carve(values: torch.Tensor, offset: int) -> torch.Tensor:
    """`values` copied into a fresh buffer `offset` elements past its start (offset 1: no
    tensor is 16-byte aligned), as a contiguous view of the same shape."""
    buffer = torch.empty(values.numel() + offset, dtype=values.dtype, device=values.device)
    view = buffer[offset:].view(values.shape)
    view.copy_(values)
    return view


class Call:
    """The tensors of op calls, one entry per param, kept across steps as the optimizer keeps
    them. Momentum buffers start as NaN: a first step must not read them."""

    def __init__(self, params, history_dtype=None, *, counts_device=None, offset=0,
                 history_fill=0.0, seed=1):
        self.params = params
        self.offset = offset
        self.history_dtype = history_dtype or params[0].dtype
        self.generator = torch.Generator().manual_seed(seed)
        self.delta_even = [self._state(p, self.history_dtype, history_fill) for p in params]
        self.delta_odd = [self._state(p, self.history_dtype, history_fill) for p in params]
        self.momentum_buffers = [self._state(p, p.dtype, float("nan")) for p in params]
        device = counts_device or params[0].device
        self.steps = [torch.zeros((), dtype=torch.int64, device=device) for _ in params]

    @classmethod
    def of_shapes(cls, shapes, dtype, history_dtype=None, *, device="cpu", offset=0, seed=0,
                  **kwargs) -> Call:
        generator = torch.Generator().manual_seed(seed)
        params = [carve(randn(s, generator).to(dtype).to(device), offset) for s in shapes]
        return cls(params, history_dtype, offset=offset, **kwargs)

    def _state(self, p: torch.Tensor, dtype: torch.dtype, fill: float) -> torch.Tensor:
        if self.offset:
            return carve(torch.full(p.shape, fill, dtype=dtype, device=p.device), self.offset)
        return torch.empty_like(p, dtype=dtype).fill_(fill)  # keeps the param's layout

    @property
    def dtype(self) -> torch.dtype:
        return self.params[0].dtype

    def grads(self, scale: float = 1.0) -> list[torch.Tensor]:
        return [carve((randn(p.shape, self.generator) * scale).to(p.dtype).to(p.device),
                      self.offset) for p in self.params]

    def run(self, grads, lr=0.05, *, grad_scale=None, found_inf=None, indices=None,
            momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False,
            switch_step=0) -> None:
        """One op call on the params `indices` (default: all) with `grads` (one per index)."""
        indices = range(len(self.params)) if indices is None else indices

        def pick(tensors):
            return [tensors[i] for i in indices]

        lr_tensor = lr if isinstance(lr, torch.Tensor) else None
        lr_value = 0.0 if lr_tensor is not None else float(lr)
        buffers = pick(self.momentum_buffers) if momentum else []
        OP(pick(self.params), grads, pick(self.delta_even), pick(self.delta_odd), buffers,
           pick(self.steps), lr_value, lr_tensor, B1, B2, momentum, dampening, weight_decay,
           nesterov, maximize, switch_step, grad_scale, found_inf)

    def count(self, i: int) -> int:
        return int(self.steps[i])

    def d1(self, i: int) -> torch.Tensor:
        """The newest step: in slot (count - 1) % 2."""
        return self.delta_odd[i] if self.count(i) % 2 == 0 else self.delta_even[i]

    def d2(self, i: int) -> torch.Tensor:
        return self.delta_even[i] if self.count(i) % 2 == 0 else self.delta_odd[i]

    def tensors(self) -> list[torch.Tensor]:
        return [*self.params, *self.delta_even, *self.delta_odd, *self.momentum_buffers,
                *self.steps]

    def snapshot(self) -> list[torch.Tensor]:
        return [t.clone() for t in self.tensors()]

    def assert_unchanged(self, snapshot, what: str = "") -> None:
        for t, s in zip(self.tensors(), snapshot):
            torch.testing.assert_close(t, s, rtol=0, atol=0, equal_nan=True,
                                       msg=lambda m: f"{what}: {m}")


def randn(shape, generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def buffer_tolerance(tolerance: Tolerance, steps: int, options: dict) -> float:
    """Tolerance.buffer() plus what weight decay carries over: every step adds
    weight_decay * (the weight's error) to the buffer, and momentum sums those with a total gain
    of at most 1 / (1 - momentum)."""
    decay = options.get("weight_decay", 0.0) * tolerance.gain_m * tolerance.weight(steps)
    return tolerance.buffer() + decay


def check_against(call: Call, oracles: list[OracleParam], tolerance: Tolerance, what: str,
                  options: dict, history_from: int = 1) -> None:
    """Every param's weight, history and momentum buffer against its oracle. The history is
    compared from `history_from` completed steps on (before that a slot may hold its initial
    fill, which the oracle's zero history does not model)."""
    tolerance.observe(oracles)
    for i, o in enumerate(oracles):
        count = call.count(i)
        where = f"{what}, param {i} {tuple(call.params[i].shape)}"
        assert count == o.step, f"{where}: count {count}, oracle {o.step}"
        assert_close(call.params[i], o.weight, tolerance.weight(count), f"{where} weight")
        if count >= history_from:
            assert_close(call.d1(i), o.d1, tolerance.history(), f"{where} d1")
            assert_close(call.d2(i), o.d2, tolerance.history(), f"{where} d2")
        if options.get("momentum") and count > 0:
            assert_close(call.momentum_buffers[i], o.momentum_buffer,
                         buffer_tolerance(tolerance, count, options), f"{where} momentum buffer")


def run_against_oracle(call: Call, options: dict, steps: int = 12, lr=0.05, grad_scale=None,
                       skip=(), history_from: int = 1, scalars_device=None) -> None:
    """Step `call` and the oracle `steps` times with the same grads; compare after each step.
    lr may be a tensor; grad_scale (a float) scales the grads up and is passed as a tensor;
    the steps in `skip` get found_inf = 1. grad_scale and found_inf are made on
    `scalars_device` (default: the params' device)."""
    device = scalars_device or call.params[0].device
    oracles = [OracleParam(p) for p in call.params]
    tolerance = Tolerance(call.dtype, call.history_dtype, options.get("momentum", 0.0))
    for k in range(steps):
        grads = call.grads(scale=grad_scale or 1.0)
        skipped = k in skip
        scale = None if grad_scale is None else torch.tensor(grad_scale, device=device)
        found_inf = torch.tensor(float(skipped), device=device) if skip else None
        call.run(grads, lr, grad_scale=scale, found_inf=found_inf, **options)
        for o, g in zip(oracles, grads):
            oracle_step(o, g, lr=float(lr), coefficients=PAPER_COEFFICIENTS,
                        grad_scale=grad_scale, found_inf=skipped, **options)
        check_against(call, oracles, tolerance, f"step {k}", options, history_from)


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_oracle_every_dtype_pair_and_option_set(dtype, options):
    # Pairs without a SIMD path (fp64 with a reduced history, fp32 with fp64) run the scalar one.
    for history_dtype in DTYPES:
        run_against_oracle(Call.of_shapes(ODD_SHAPES, dtype, history_dtype), options)


# lr as a float and as one-element tensors: 0-dim, shape (1,), another dtype, an integer (lr 1,
# with grad_scale 20 the effective rate stays 0.05).
LRS = {
    "float": (0.05, 1024.0),
    "0-dim-fp64": (torch.tensor(0.05, dtype=torch.float64), 1024.0),
    "shape-1-fp32": (torch.tensor([0.03]), 1024.0),
    "bf16": (torch.tensor(0.05, dtype=torch.bfloat16), 1024.0),
    "int64": (torch.tensor([1]), 20.0),
}


@pytest.mark.parametrize("lr, grad_scale", LRS.values(), ids=LRS.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_oracle_lr_tensors_and_grad_scale(dtype, lr, grad_scale):
    call = Call.of_shapes(ODD_SHAPES, dtype, torch.float32)
    run_against_oracle(call, OPTIONS["dampening-maximize"], steps=6, lr=lr,
                       grad_scale=grad_scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_oracle_unaligned_views(dtype):
    # Params, grads and state one element into their buffers: no 16-byte alignment anywhere.
    for history_dtype in (dtype, torch.float32):
        call = Call.of_shapes(ODD_SHAPES, dtype, history_dtype, offset=1)
        run_against_oracle(call, OPTIONS["momentum-decay-nesterov"], steps=6)


@pytest.fixture
def four_threads():
    """More threads than this machine's cores still split the element range."""
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("four_threads")
def test_oracle_many_tensors_across_threads():
    # 300 tensors, some empty, ~200K elements: parallel_for splits the range mid-tensor.
    generator = torch.Generator().manual_seed(3)
    sizes = torch.randint(0, 1500, (300,), generator=generator).tolist()
    sizes[::37] = [0] * len(sizes[::37])
    shapes = [(n,) for n in sizes]
    run_against_oracle(Call.of_shapes(shapes, torch.float32), OPTIONS["momentum-decay-nesterov"],
                       steps=4)
    run_against_oracle(Call.of_shapes(shapes, torch.bfloat16), OPTIONS["plain"], steps=4)


@pytest.mark.usefixtures("four_threads")
def test_oracle_one_tensor_across_threads():
    call = Call.of_shapes([(3 * 32768 + 7,)], torch.float32)
    run_against_oracle(call, OPTIONS["warmup-momentum"], steps=5)


# Which params get a grad at each step of a call: params without one keep their count, so later
# calls mix counts (parity, first momentum step and warm-up all differ within one call).
SCHEDULE = [[0], [0, 1], [0, 1, 2], [1, 2, 3], [0, 1, 2, 3], [3], [0, 1, 2, 3], [0, 2, 3]]


def run_schedule(call: Call, options: dict, device, one_call: bool) -> None:
    generator = torch.Generator().manual_seed(5)
    for indices in SCHEDULE:
        grads = [randn(call.params[i].shape, generator).to(call.dtype).to(device)
                 for i in indices]
        if one_call:
            call.run(grads, indices=indices, **options)
        else:
            for i, g in zip(indices, grads):
                call.run([g], indices=[i], **options)


def check_different_counts(dtype, device="cpu", counts_device=None):
    """One call over params with different counts equals stepping each param alone (bitwise),
    and the oracle."""
    options = dict(momentum=0.9, switch_step=3, weight_decay=1e-2)
    shapes = [(4097,), (33,), (7, 5), (1,)]
    together = Call.of_shapes(shapes, dtype, device=device, counts_device=counts_device)
    alone = Call.of_shapes(shapes, dtype, device=device, counts_device=counts_device)
    run_schedule(together, options, device, one_call=True)
    run_schedule(alone, options, device, one_call=False)
    counts = [sum(i in indices for indices in SCHEDULE) for i in range(len(shapes))]
    assert [together.count(i) for i in range(len(shapes))] == counts
    for t, a in zip(together.tensors(), alone.tensors()):
        assert torch.equal(t, a)

    oracles = [OracleParam(p) for p in Call.of_shapes(shapes, dtype).params]
    generator = torch.Generator().manual_seed(5)
    tolerance = Tolerance(dtype, dtype, options["momentum"])
    for indices in SCHEDULE:
        for i in indices:
            g = randn(oracles[i].weight.shape, generator).to(dtype)
            oracle_step(oracles[i], g, lr=0.05, coefficients=PAPER_COEFFICIENTS, **options)
    check_against(together, oracles, tolerance, "after the schedule", options)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_oracle_different_counts_in_one_call(dtype):
    check_different_counts(dtype)


@pytest.mark.parametrize("history_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_first_step_ignores_a_nan_momentum_buffer(dtype, history_dtype):
    call = Call.of_shapes(ODD_SHAPES, dtype, history_dtype)
    assert all(b.isnan().all() for b in call.momentum_buffers)
    grads = call.grads()
    call.run(grads, momentum=0.9, dampening=0.5)
    for p, b, g in zip(call.params, call.momentum_buffers, grads):
        assert torch.equal(b, g)  # buf = g exactly, not 0 * buf + (1 - dampening) * g
        assert p.isfinite().all()


def test_oracle_warmup_never_reads_the_history():
    # Both slots are written during a two-step warm-up before the first multistep read.
    call = Call.of_shapes(ODD_SHAPES, torch.float32, history_fill=float("nan"))
    run_against_oracle(call, dict(switch_step=2), steps=5, history_from=2)


@pytest.mark.parametrize("found_inf", [torch.tensor(1.0), torch.tensor([float("inf")])],
                         ids=["0-dim", "shape-1"])
def test_found_inf_changes_nothing(found_inf):
    call = Call.of_shapes(ODD_SHAPES, torch.float32)
    options = OPTIONS["momentum-decay-nesterov"]
    for k in range(3):
        before = call.snapshot()
        call.run(call.grads(), found_inf=found_inf, **options)
        call.assert_unchanged(before, f"step {k}")  # the counts included
        call.run(call.grads(), found_inf=torch.zeros(()), **options)


def test_oracle_skipped_steps_then_momentum():
    # Skipping the first step leaves the next one the first: buf = g there.
    call = Call.of_shapes(ODD_SHAPES, torch.float32)
    run_against_oracle(call, dict(momentum=0.9), steps=6, skip=(0, 3))


def test_oracle_channels_last_param_and_strided_grads():
    generator = torch.Generator().manual_seed(0)
    params = [randn((2, 3, 4, 5), generator).float().to(memory_format=torch.channels_last),
              randn((7, 5), generator).float()]
    call = Call(params)
    assert call.delta_even[0].is_contiguous(memory_format=torch.channels_last)
    oracles = [OracleParam(p) for p in params]
    tolerance = Tolerance(torch.float32, torch.float32, 0.9)
    options = dict(momentum=0.9, weight_decay=1e-2)
    for k in range(4):
        # A contiguous grad for the channels_last param, a strided non-dense one for the other.
        grads = [randn((2, 3, 4, 5), generator).float(),
                 randn((7, 10), generator).float()[:, ::2]]
        kept = [g.clone() for g in grads]
        call.run(grads, **options)
        assert all(torch.equal(g, k) for g, k in zip(grads, kept)), "a grad was written"
        for o, g in zip(oracles, grads):
            oracle_step(o, g, lr=0.05, coefficients=PAPER_COEFFICIENTS, **options)
        check_against(call, oracles, tolerance, f"step {k}", options)
    assert params[0].is_contiguous(memory_format=torch.channels_last)


def test_empty_lists_are_not_a_call():
    # Without a tensor the dispatcher cannot pick a kernel by itself: name the CPU one.
    cpu = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    OP.redispatch(cpu, [], [], [], [], [], [], 0.1, None, B1, B2, 0.9, 0.0, 0.0, False, False,
                  0, None, None)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_opcheck(momentum):
    call = Call.of_shapes([(5,), (3, 4)], torch.float32)
    for b in call.momentum_buffers:
        b.zero_()  # opcheck compares runs of the op, and NaN never equals NaN
    call.steps[1].fill_(3)
    args = (call.params, call.grads(), call.delta_even, call.delta_odd,
            call.momentum_buffers if momentum else [], call.steps, 0.1, torch.tensor(0.05), B1,
            B2, momentum, 0.0, 1e-3, False, False, 2, torch.tensor(2.0), torch.tensor(0.0))
    torch.library.opcheck(OP, args)


def bad_arguments():
    """(what is wrong, how to make it wrong, the message expected): each case breaks param 1
    of a valid two-param call."""

    def replace(name, make):
        def spoil(args):
            args[name][1] = make(args[name][1])
        return spoil

    return {
        "grad-shape": (replace("grads", lambda g: torch.zeros(6)), r"grads\[1\]"),
        "grads-missing": (lambda a: a["grads"].pop(), "one entry per param"),
        "delta-shape": (replace("delta_even", lambda d: torch.zeros(2, 2)), r"delta_even\[1\]"),
        "history-dtype-mix": (replace("delta_odd", lambda d: d.bfloat16()),
                              r"delta_odd\[1\] has dtype"),
        "history-strides": (replace("delta_odd", lambda d: d.t().contiguous().t()),
                            r"delta_odd\[1\] must have the shape and strides"),
        "momentum-list-length": (lambda a: a["momentum_buffers"].pop(), "momentum_buffers must"),
        "momentum-dtype": (replace("momentum_buffers", lambda b: b.double()),
                           r"momentum_buffers\[1\] has dtype"),
        "param-dtype-mix": (replace("params", lambda p: p.double()), r"params\[1\] is"),
        "param-not-dense": (replace("params", lambda p: torch.zeros(3, 8)[:, ::2]),
                            r"params\[1\] must be dense"),
        "step-dtype": (replace("steps", lambda s: s.int()), r"steps\[1\] must be a one-element"),
        "step-shape": (replace("steps", lambda s: torch.zeros(2, dtype=torch.int64)),
                       r"steps\[1\] must be a one-element"),
        "lr-two-elements": (lambda a: a.update(lr_tensor=torch.ones(2)), "lr_tensor must be"),
        "lr-bool": (lambda a: a.update(lr_tensor=torch.tensor(True)), "lr_tensor must be"),
        "grad-scale-int": (lambda a: a.update(grad_scale=torch.tensor(2)), "grad_scale must be"),
        "found-inf-two": (lambda a: a.update(found_inf=torch.zeros(2)), "found_inf must be"),
    }


BAD = bad_arguments()


@pytest.mark.parametrize("spoil, message", BAD.values(), ids=BAD.keys())
def test_bad_arguments_raise_before_any_change(spoil, message):
    call = Call.of_shapes([(5,), (3, 4)], torch.float32)
    call.run(call.grads(), momentum=0.9)  # counts 1: a bad call must not advance them
    before = call.snapshot()
    args = dict(params=list(call.params), grads=call.grads(), delta_even=list(call.delta_even),
                delta_odd=list(call.delta_odd), momentum_buffers=list(call.momentum_buffers),
                steps=list(call.steps), lr_tensor=None, grad_scale=None, found_inf=None)
    spoil(args)
    with pytest.raises(RuntimeError, match=message):
        OP(args["params"], args["grads"], args["delta_even"], args["delta_odd"],
           args["momentum_buffers"], args["steps"], 0.05, args["lr_tensor"], B1, B2, 0.9, 0.0,
           0.0, False, False, 0, args["grad_scale"], args["found_inf"])
    call.assert_unchanged(before)


def test_mutated_tensors_get_new_versions():
    """Like torch's in-place ops: autograd notices a param stepped after it was saved."""
    w = torch.nn.Parameter(torch.randn(5))
    loss = (w * w).sum()  # saves w for backward
    call = Call([w.detach()])
    call.params = [w]
    versions = [t._version for t in call.tensors()]
    with torch.no_grad():
        call.run([torch.ones(5)], momentum=0.9)
    after = [t._version for t in call.tensors()]
    assert all(a > b for a, b in zip(after, versions)), (versions, after)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_compiled_call_matches_eager():
    """torch.compile traces the op through its fake kernel (fullgraph: no graph break)."""
    options = OPTIONS["momentum-decay-nesterov"]

    def step(call: Call, grads, lr):
        call.run(grads, lr, **options)

    eager = Call.of_shapes(ODD_SHAPES, torch.float32)
    compiled = Call.of_shapes(ODD_SHAPES, torch.float32)
    compiled_step = torch.compile(step, fullgraph=True, backend="aot_eager")
    lr = torch.tensor(0.05)
    for _ in range(4):
        grads = eager.grads()
        step(eager, grads, lr)
        compiled_step(compiled, grads, lr)
    for c, e in zip(compiled.tensors(), eager.tensors()):
        assert torch.equal(c, e)
    assert compiled.count(0) == 4


# Every instruction-set copy of the kernel, on this machine: ATEN_CPU_CAPABILITY caps what the op
# picks. The oracle tests rerun in a subprocess per capability the CPU has.
_CAPABILITIES = {"default": "DEFAULT", "avx2": "AVX2", "avx512": "AVX512"}


def _supported(capability: str) -> bool:
    order = list(_CAPABILITIES)
    best = torch.backends.cpu.get_cpu_capability().lower()
    return best in order and order.index(capability) <= order.index(best)


def test_kernel_copy_in_use_is_reported():
    assert native_extension.cpu_capability() in _CAPABILITIES.values()
    if os.environ.get("TMSGD_EXPECT_CPU_CAPABILITY"):
        assert native_extension.cpu_capability() == os.environ["TMSGD_EXPECT_CPU_CAPABILITY"]


@pytest.mark.skipif(os.environ.get("TMSGD_EXPECT_CPU_CAPABILITY") is not None,
                    reason="already inside a per-capability subprocess")
@pytest.mark.parametrize("capability", list(_CAPABILITIES))
def test_every_cpu_capability_copy(capability):
    if not _supported(capability):
        pytest.skip(f"this CPU lacks {capability}")
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability,
               TMSGD_EXPECT_CPU_CAPABILITY=_CAPABILITIES[capability])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__,
         "-k", "oracle or first_step or kernel_copy_in_use"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
