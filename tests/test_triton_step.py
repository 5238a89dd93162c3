"""The Triton step against the float64 oracle (tests/oracle.py), per step, params and all state,
on both paths: counts on the host and counts on the device.

Under TRITON_INTERPRET=1 (no GPU) the kernels run on CPU tensors, where the counts of both paths
live on the same device: the op then takes the host path, and the device path is run by calling
the op's implementation with counts_on_device=True. On a GPU the counts' device picks the path.
Tolerances come from the storage dtypes (trajectory.Tolerance: one eps per rounding, which also
covers the interpreter's bf16 stores, which truncate instead of rounding to nearest).
"""

from __future__ import annotations

import pytest
import torch
from oracle import OracleParam, oracle_step
from trajectory import ODD_SHAPES, Tolerance, assert_close

from tmsgd_kernels.backends import triton_backend, unavailable_reason
from tmsgd_kernels.coefficients import PAPER_COEFFICIENTS, delta_coefficients
from tmsgd_kernels.step_scalars import StepScalars

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
REASON = unavailable_reason("triton", DEVICE)
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"triton on {DEVICE}: {REASON}")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
MODES = ["host", "device"]
# The odd shapes, and one of 8192 elements: under the interpreter a tensor's block is the next
# power of two of the largest numel, so this one fills its block and takes the unmasked path
# that a GPU takes for nearly every block.
SHAPES = [*ODD_SHAPES, (64, 128)]


def step_with(mode, params, grads, delta_even, delta_odd, buffers, steps, scalars,
              grad_scale=None, found_inf=None) -> None:
    """One call of the backend on the given path (see the module docstring)."""
    if mode == "device" and DEVICE.type == "cpu":
        from tmsgd_kernels.triton_kernels import op
        from tmsgd_kernels.triton_kernels.tensor_lists import TensorLists

        lists = TensorLists(params, grads, delta_even, delta_odd, buffers, steps)
        op.run(lists, scalars, grad_scale, found_inf, counts_on_device=True)
    else:
        triton_backend.step(params, grads, delta_even, delta_odd, buffers, steps, scalars,
                            grad_scale, found_inf)


def counts_device(mode: str) -> torch.device:
    return torch.device("cpu") if mode == "host" else DEVICE


def random(shape, dtype, generator, scale=1.0) -> torch.Tensor:
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(dtype)


class Trajectory:
    """Tensors stepped by the backend next to one oracle per param, checked after every step."""

    def __init__(self, params, mode, *, history_dtype=None, momentum=0.0, **options):
        self.params, self.mode = params, mode
        dtype = params[0].dtype
        history_dtype = history_dtype or dtype
        self.delta_even = [torch.zeros_like(p, dtype=history_dtype) for p in params]
        self.delta_odd = [torch.zeros_like(p, dtype=history_dtype) for p in params]
        self.buffers = [torch.zeros_like(p) for p in params] if momentum else []
        self.steps = [torch.zeros((), dtype=torch.int64, device=counts_device(mode))
                      for _ in params]
        self.oracle = [OracleParam(p) for p in params]
        self.options = dict(options, momentum=momentum)
        self.tolerance = Tolerance(dtype, history_dtype, momentum)
        self.generator = torch.Generator().manual_seed(1)

    def scalars(self) -> StepScalars:
        o = self.options
        b1, b2 = delta_coefficients(o.get("coefficients", PAPER_COEFFICIENTS))
        return StepScalars(o.get("lr", 0.05), b1, b2, o["momentum"], o.get("dampening", 0.0),
                           o.get("weight_decay", 0.0), o.get("nesterov", False),
                           o.get("maximize", False), o.get("switch_step", 0))

    def lists(self, indices):
        def pick(tensors):
            return [tensors[i] for i in indices] if tensors else []

        return (pick(self.params), pick(self.delta_even), pick(self.delta_odd),
                pick(self.buffers), pick(self.steps))

    def step(self, indices=None, *, grads=None, grad_scale=None, skip=None, check=True) -> None:
        """Step the params at `indices` (all by default); `skip` (True/False) passes found_inf."""
        indices = range(len(self.params)) if indices is None else indices
        if grads is None:
            scale = grad_scale or 1.0
            grads = [random(self.params[i].shape, self.params[i].dtype, self.generator, scale)
                     .to(DEVICE) for i in indices]
        params, even, odd, buffers, steps = self.lists(indices)
        scale = None if grad_scale is None else torch.tensor(grad_scale, device=DEVICE)
        found_inf = None if skip is None else torch.tensor(float(skip), device=DEVICE)
        step_with(self.mode, params, grads, even, odd, buffers, steps, self.scalars(), scale,
                  found_inf)
        options = {k: v for k, v in self.options.items() if k != "lr"}
        lr = float(self.options.get("lr", 0.05))
        for i, g in zip(indices, grads):
            oracle_step(self.oracle[i], g, lr=lr, grad_scale=grad_scale, found_inf=bool(skip),
                        **options)
        if check:
            self.check()

    def check(self) -> None:
        self.tolerance.observe(self.oracle)
        done = max(o.step for o in self.oracle)
        for i, (p, o) in enumerate(zip(self.params, self.oracle)):
            where = f"param {i} {tuple(p.shape)} after {o.step} steps"
            count = int(self.steps[i])
            assert count == o.step, f"{where}: count {count}"
            assert_close(p, o.weight, self.tolerance.weight(done), f"{where}: weight")
            # After count k, slot (k - 1) % 2 holds the newest step d1 and slot k % 2 holds d2.
            newest, older = ((self.delta_even[i], self.delta_odd[i]) if count % 2 == 1
                             else (self.delta_odd[i], self.delta_even[i]))
            assert_close(newest, o.d1, self.tolerance.history(), f"{where}: d1")
            assert_close(older, o.d2, self.tolerance.history(), f"{where}: d2")
            if self.buffers and o.momentum_buffer is not None:
                assert_close(self.buffers[i], o.momentum_buffer, self.tolerance.buffer(),
                             f"{where}: momentum buffer")


def make_params(shapes, dtype, seed=0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [random(s, dtype, generator).to(DEVICE) for s in shapes]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("history_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_pair_matches_oracle(dtype, history_dtype, mode):
    # No weight decay here: through it a weight's error (large with a narrow history) enters
    # the momentum buffer, which Tolerance.buffer does not model. Options: fp32, below.
    run = Trajectory(make_params(SHAPES, dtype), mode, history_dtype=history_dtype,
                     momentum=0.9, nesterov=True, switch_step=2)
    for _ in range(5):
        run.step()


LR_TENSORS = {
    "lr_0dim": lambda: torch.tensor(0.05, device=DEVICE),
    "lr_shape_1": lambda: torch.tensor([0.05], device=DEVICE),
    "lr_float64": lambda: torch.tensor(0.05, dtype=torch.float64, device=DEVICE),
    "lr_int": lambda: torch.tensor(1, device=DEVICE),
    "lr_on_cpu": lambda: torch.tensor(0.05),
}

OPTIONS = {
    "plain": {},
    "momentum": {"momentum": 0.9},
    "dampening": {"momentum": 0.8, "dampening": 0.3},
    "nesterov": {"momentum": 0.9, "nesterov": True},
    "weight_decay_maximize": {"weight_decay": 0.1, "maximize": True},
    "warm_up": {"switch_step": 3, "momentum": 0.5},
    "warm_up_past_every_step": {"switch_step": 100},
    "other_coefficients": {"coefficients": (1.25, -0.5, 0.25)},
    **{name: {"lr": make, "momentum": 0.9} for name, make in LR_TENSORS.items()},
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_matches_oracle(name, mode):
    options = dict(OPTIONS[name])
    if callable(options.get("lr")):
        options["lr"] = options["lr"]()
    run = Trajectory(make_params(SHAPES, torch.float32), mode, **options)
    for _ in range(5):
        run.step()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
def test_grad_scale_matches_oracle(dtype, mode):
    run = Trajectory(make_params(SHAPES, dtype), mode, momentum=0.9)
    for _ in range(4):
        run.step(grad_scale=64.0)


@pytest.mark.parametrize("mode", MODES)
def test_odd_sizes_and_unaligned_views(mode):
    """Every tensor a view that starts one element past alignment, with gaps between them that
    must not be written."""
    sizes = [1, 3, 4097, 17, 0, 5]
    generator = torch.Generator().manual_seed(0)

    def views():
        storage = random(sum(sizes) + 2 * len(sizes) + 1, torch.float32, generator).to(DEVICE)
        out, offset = [], 1
        for n in sizes:
            out.append(storage[offset:offset + n])
            offset += n + 2
        return storage, out

    storages = {}
    storages["params"], params = views()
    run = Trajectory(params, mode, momentum=0.9, switch_step=1)
    for name in ("delta_even", "delta_odd", "buffers"):
        storages[name], tensors = views()
        for t in tensors:
            t.zero_()
        setattr(run, name, tensors)
    gaps = torch.ones_like(storages["params"], dtype=torch.bool)
    for p in params:
        gaps[p.storage_offset():p.storage_offset() + p.numel()] = False
    before = {name: storage[gaps].clone() for name, storage in storages.items()}
    for _ in range(4):
        run.step(grads=views()[1])
    for name, storage in storages.items():
        assert torch.equal(storage[gaps], before[name]), f"a gap in {name} was written"


@pytest.mark.parametrize("mode", MODES)
def test_tensor_over_several_blocks(mode):
    """More elements than the interpreter's largest block (2**16): full blocks and a tail."""
    run = Trajectory(make_params([(2 * 65536 + 3,), (7,)], torch.float32), mode, momentum=0.9,
                     switch_step=1)
    for _ in range(3):
        run.step()


@pytest.mark.parametrize("mode", MODES)
def test_only_empty_tensors_still_count(mode):
    """Nothing to launch an update for, but every count advances."""
    run = Trajectory(make_params([(0,), (2, 0)], torch.float32), mode, momentum=0.9)
    for _ in range(2):
        run.step()
    assert [int(s) for s in run.steps] == [2, 2]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_tensors_with_different_counts_in_one_call(mode, momentum):
    """Counts 0 to 4 in one call: every history parity, first momentum step and warm-up state,
    in one launch per class (host) or one launch reading each count (device)."""
    run = Trajectory(make_params([(7,), (33,), (1,), (300,), (2, 3)], torch.float32), mode,
                     momentum=momentum, switch_step=2)
    for ahead in range(1, 5):
        run.step(list(range(ahead, 5)))  # param i is i steps ahead of param 0
    assert [int(s) for s in run.steps] == [0, 1, 2, 3, 4]
    for _ in range(3):
        run.step()


@pytest.mark.parametrize("mode", MODES)
def test_first_step_reads_neither_momentum_nor_history_in_warm_up(mode):
    """A fresh state's momentum buffer is garbage until the first step sets buf = g, and a
    warm-up step must not read the history: NaN and inf in them must not leak."""
    run = Trajectory(make_params(SHAPES, torch.float32), mode, momentum=0.9,
                     dampening=0.5, switch_step=2)
    for buf in run.buffers:
        buf.fill_(float("nan"))
    for d in run.delta_even + run.delta_odd:
        d.fill_(float("inf"))
    run.step(check=False)
    run.step(check=False)
    assert all(torch.isfinite(p).all() for p in run.params)
    # The warm-up wrote both slots; from here on the history is real.
    run.check()
    for _ in range(2):
        run.step()


def snapshot(run: Trajectory) -> list[torch.Tensor]:
    return [t.clone() for t in (*run.params, *run.delta_even, *run.delta_odd, *run.buffers,
                                *run.steps)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_found_inf_changes_nothing(mode, momentum):
    """Skipped steps change no param, no state and no count: on the first step, later, and with
    counts that differ between tensors."""
    run = Trajectory(make_params(SHAPES, torch.float16), mode, momentum=momentum)

    def skipped(indices=None):
        before = snapshot(run)
        run.step(indices, grad_scale=8.0, skip=True)
        for a, b in zip(snapshot(run), before):
            assert torch.equal(a, b) or (a.isnan() & b.isnan()).all()

    skipped()
    run.step(grad_scale=8.0, skip=False)
    run.step([0, 2, 4], grad_scale=8.0, skip=False)
    skipped()
    skipped([1, 2])
    run.step(grad_scale=8.0, skip=False)


@pytest.mark.parametrize("mode", MODES)
def test_channels_last_param_with_contiguous_grad(mode):
    """Grads whose strides differ from their param's are stepped in the param's layout."""
    generator = torch.Generator().manual_seed(3)
    params = [random((2, 3, 4, 5), torch.float32, generator).to(DEVICE)
              .to(memory_format=torch.channels_last), random((6, 4), torch.float32, generator)
              .to(DEVICE)]
    run = Trajectory(params, mode, momentum=0.9)
    assert run.delta_even[0].is_contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        grads = [random(p.shape, torch.float32, generator).to(DEVICE) for p in params]
        grads[1] = grads[1].t().contiguous().t()  # column-major, param row-major
        assert not grads[0].is_contiguous(memory_format=torch.channels_last)
        run.step(grads=grads)


@pytest.mark.skipif(DEVICE.type != "cpu" or unavailable_reason("cpu", DEVICE) is not None,
                    reason="the interpreter against the C++ CPU kernel, on CPU tensors")
@pytest.mark.parametrize("history_dtype", [torch.float32, torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
def test_same_arithmetic_as_the_cpu_kernel(dtype, history_dtype):
    """No contraction, IEEE division by grad_scale, the same order of operations and 16-bit
    stores rounded from fp32: bit for bit what the C++ kernel computes (numpy, which the
    interpreter runs on, rounds every operation as the compiled kernels do). Not bf16: the
    interpreter truncates bf16 stores."""
    from tmsgd_kernels import functional

    generator = torch.Generator().manual_seed(4)
    start = [random(s, dtype, generator) for s in [(1,), (4097,), (3, 7)]]
    grads = [[random(p.shape, dtype, generator, 3.0) for p in start] for _ in range(4)]
    options = dict(momentum=0.8, dampening=0.3, nesterov=False, weight_decay=0.01,
                   maximize=True, switch_step=1)
    runs = []
    for backend in ("cpu", "triton"):
        params = [p.clone() for p in start]
        state = functional.init_state(params, options["momentum"], history_dtype)
        for k, step_grads in enumerate(grads):
            functional.tmsgd(params, step_grads, state["delta_even"], state["delta_odd"],
                             state["momentum_buffers"], state["steps"], lr=0.05,
                             grad_scale=torch.tensor(3.0), found_inf=torch.tensor(float(k == 2)),
                             backend=backend, **options)
        runs.append(params + state["delta_even"] + state["delta_odd"] + state["momentum_buffers"])
    for a, b in zip(*runs):
        assert torch.equal(a, b)
