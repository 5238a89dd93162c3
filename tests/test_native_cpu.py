"""The `cpu` backend (the C++ kernel of csrc/) against the pure-PyTorch backend, step by step.

The oracle suite (tests/test_oracle.py and friends) already runs against `cpu` through the
`backend` fixture; this file adds what is specific to the native kernel: opcheck of the custom op,
per-step parity with `torch` for every (param, history) dtype pair and option set, odd sizes and
unaligned views, many tensors split across threads, a skipped first step, and every CPU
instruction-set copy of the kernel (in subprocesses, via ATEN_CPU_CAPABILITY).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tmsgd_kernels import native_op
from tmsgd_kernels.backends import native_cpu, torch_backend
from tmsgd_kernels.step_options import StepOptions

pytestmark = pytest.mark.skipif(
    native_cpu.unavailable_reason(torch.device("cpu")) is not None,
    reason=f"cpu backend: {native_cpu.unavailable_reason(torch.device('cpu'))}",
)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
OPTIONS = {
    "plain": dict(),
    "momentum-decay-nesterov": dict(momentum=0.9, weight_decay=1e-2, nesterov=True),
    "dampening-maximize": dict(momentum=0.8, dampening=0.3, maximize=True),
    "warmup": dict(switch_step=3, weight_decay=1e-3),
}
B1, B2 = 0.5, -0.5  # the paper's coefficients (1.5, -1, 0.5) in delta form


def history_dtypes(param_dtype: torch.dtype) -> list[torch.dtype]:
    return sorted({torch.float32, torch.bfloat16, param_dtype}, key=str)


class Bucket:
    """A bucket's params, grads source and state, as the optimizer would hand it to a backend."""

    def __init__(self, sizes, dtype, history_dtype, momentum, seed=0, offset=0, device="cpu"):
        self.generator = torch.Generator().manual_seed(seed)
        self.sizes = list(sizes)
        self.device = torch.device(device)
        total = sum(self.sizes)
        # Params (and history) are carved out of larger buffers at `offset` elements, so with
        # offset 1 no tensor is 16-byte aligned.
        storage = self.randn(total + offset).to(dtype)
        self.params = [p for p in storage[offset:].split(self.sizes)]
        history = torch.zeros(2, total + offset, dtype=history_dtype, device=self.device)
        self.history = history[:, offset:]
        self.momentum_buffer = (
            torch.zeros(total, dtype=dtype, device=self.device) if momentum else None)
        self.step = torch.zeros((), dtype=torch.int64, device=self.device)
        self.dtype = dtype

    def randn(self, n):
        return torch.randn(n, generator=self.generator, dtype=torch.float64).to(self.device)

    def grads(self):
        return [self.randn(s).to(self.dtype) for s in self.sizes]

    def clone(self) -> Bucket:
        twin = object.__new__(Bucket)
        twin.__dict__.update(self.__dict__)
        twin.params = [p.clone() for p in self.params]
        twin.history = self.history.clone()
        buffer = self.momentum_buffer
        twin.momentum_buffer = None if buffer is None else buffer.clone()
        twin.step = self.step.clone()
        return twin

    def run(self, backend, grads, lr=0.05, grad_scale=None, found_inf=None, **options) -> None:
        backend.step_bucket(self.params, grads, self.history, self.momentum_buffer, self.step,
                            StepOptions(lr, B1, B2, **options), grad_scale, found_inf)


def _max(t: torch.Tensor) -> float:
    return t.detach().double().abs().max().item() if t.numel() else 0.0


def assert_step_parity(native: Bucket, reference: Bucket, before: Bucket, what: str) -> None:
    """Both backends took one step from the same state `before`.

    They may differ by one rounding to each storage dtype (a result that lands near a rounding
    boundary) plus a few opmath roundings: ATen's add-with-alpha (used by the torch backend for
    weight decay, nesterov and the lr term) fuses multiply and add, the C++ kernel does not.
    The opmath part is measured against S = max|d1| + max|d2| + max|d_new|, which bounds every
    term of d_new = b1 d1 + b2 d2 - lr u.
    """
    assert int(native.step) == int(reference.step), f"{what}: step count"
    eps_p = torch.finfo(native.dtype).eps
    eps_h = torch.finfo(native.history.dtype).eps
    eps_op = torch.finfo(torch.float64 if native.dtype == torch.float64 else torch.float32).eps
    scale = _max(before.history) * 2 + _max(reference.history)
    w_ref = torch.cat([p.reshape(-1) for p in reference.params]).double()
    w_nat = torch.cat([p.reshape(-1) for p in native.params]).double()
    atol_w = eps_p * _max(w_ref) + 4 * eps_op * scale
    torch.testing.assert_close(w_nat, w_ref, rtol=0, atol=atol_w, msg=lambda m: f"{what} W: {m}")
    atol_h = eps_h * _max(reference.history) + 4 * eps_op * scale
    torch.testing.assert_close(native.history.double(), reference.history.double(), rtol=0,
                               atol=atol_h, msg=lambda m: f"{what} history: {m}")
    if reference.momentum_buffer is not None:
        magnitude = max(_max(reference.momentum_buffer), _max(before.momentum_buffer))
        atol_b = (eps_p + 4 * eps_op) * magnitude + 4 * eps_op * 1e-2 * _max(w_ref)
        torch.testing.assert_close(native.momentum_buffer.double(),
                                   reference.momentum_buffer.double(), rtol=0, atol=atol_b,
                                   msg=lambda m: f"{what} momentum buffer: {m}")


def run_lockstep(sizes, dtype, history_dtype, options, steps=12, offset=0, lr=0.05,
                 grad_scale=None, skip=(), backend=native_cpu, device="cpu") -> None:
    """Each step: both backends step the same state; compare everything; carry on from the
    native backend's result."""
    state = Bucket(sizes, dtype, history_dtype, options.get("momentum", 0.0), offset=offset,
                   device=device)
    if isinstance(lr, torch.Tensor):
        lr = lr.to(device)
    for k in range(steps):
        grads = state.grads()
        inf = None if grad_scale is None and not skip else torch.tensor(float(k in skip))
        inf = None if inf is None else inf.to(device)
        scale = None if grad_scale is None else torch.tensor(grad_scale, device=device)
        native, reference = state.clone(), state.clone()
        native.run(backend, grads, lr, scale, inf, **options)
        reference.run(torch_backend, grads, lr, scale, inf, **options)
        assert_step_parity(native, reference, state, f"step {k}")
        state = native


ODD_SIZES = [0, 1, 3, 4097, 64, 5]


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_parity_with_torch_every_dtype_pair(dtype, options):
    for history_dtype in history_dtypes(dtype):
        run_lockstep(ODD_SIZES, dtype, history_dtype, options)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_parity_history_in_any_dtype(dtype):
    # The contract allows any float history dtype; pairs without a SIMD path take the scalar one.
    for history_dtype in DTYPES:
        run_lockstep([5, 33], dtype, history_dtype, OPTIONS["momentum-decay-nesterov"], steps=4)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_parity_unaligned_views(dtype):
    # Params and history rows start one element into their buffers: no 16-byte alignment.
    run_lockstep(ODD_SIZES, dtype, torch.float32, OPTIONS["momentum-decay-nesterov"], offset=1)


def test_parity_many_tensors_across_threads():
    # 300 tensors, some empty, ~200K elements: parallel_for splits the range mid-tensor.
    generator = torch.Generator().manual_seed(3)
    sizes = torch.randint(0, 1500, (300,), generator=generator).tolist()
    sizes[::37] = [0] * len(sizes[::37])
    run_lockstep(sizes, torch.float32, torch.float32, OPTIONS["momentum-decay-nesterov"], steps=6)
    run_lockstep(sizes, torch.bfloat16, torch.bfloat16, OPTIONS["plain"], steps=6)


def test_parity_one_large_tensor():
    run_lockstep([3 * 32768 + 7], torch.float32, torch.float32, OPTIONS["plain"], steps=5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_parity_grad_scale_and_tensor_lr(dtype):
    run_lockstep(ODD_SIZES, dtype, torch.float32, OPTIONS["dampening-maximize"],
                 grad_scale=1024.0, lr=torch.tensor(0.03))


def test_first_step_skipped_by_found_inf():
    state = Bucket(ODD_SIZES, torch.float32, torch.float32, momentum=0.9)
    before = state.clone()
    state.run(native_cpu, state.grads(), 0.05, None, torch.tensor(1.0), momentum=0.9)
    assert int(state.step) == 0
    for p, q in zip(state.params, before.params):
        assert torch.equal(p, q)
    assert torch.equal(state.history, before.history)
    assert torch.equal(state.momentum_buffer, before.momentum_buffer)
    # The next steps, with the first one skipped, still match (the first real step sets buf = g).
    run_lockstep(ODD_SIZES, torch.float32, torch.float32, dict(momentum=0.9), skip=(0, 3))


PLAIN = StepOptions(lr=0.1)


def test_empty_bucket_is_not_a_step():
    step = torch.zeros((), dtype=torch.int64)
    native_op.tmsgd_step([], [], torch.zeros(2, 0), None, step, PLAIN)
    assert int(step) == 0


def test_bad_arguments_raise_before_any_change():
    w = torch.zeros(4)
    step = torch.zeros((), dtype=torch.int64)
    with pytest.raises(RuntimeError, match="history must have shape"):
        native_op.tmsgd_step([w], [torch.ones(4)], torch.zeros(2, 3), None, step, PLAIN)
    with pytest.raises(RuntimeError, match="momentum_buffer"):
        native_op.tmsgd_step([w], [torch.ones(4)], torch.zeros(2, 4), None, step,
                             StepOptions(0.1, momentum=0.9))
    with pytest.raises(RuntimeError, match="dtype"):
        native_op.tmsgd_step([w], [torch.ones(4, dtype=torch.float64)], torch.zeros(2, 4), None,
                             step, PLAIN)
    assert torch.equal(w, torch.zeros(4)) and int(step) == 0


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_opcheck(momentum):
    params = [torch.randn(5), torch.randn(3, 4)]
    grads = [torch.randn(5), torch.randn(3, 4)]
    args = (
        params, grads, torch.randn(2, 17), torch.zeros(17) if momentum else None,
        torch.tensor(3, dtype=torch.int64), 0.1, torch.tensor(0.05), B1, B2, momentum, 0.0, 1e-3,
        False, False, 0, torch.tensor(2.0), torch.tensor(0.0),
    )
    torch.library.opcheck(torch.ops.tmsgd_kernels.tmsgd_step.default, args)


def test_compiled_op_matches_eager():
    """torch.compile traces the op through its fake kernel (fullgraph: no graph break)."""

    def step(bucket: Bucket, grads):
        bucket.run(native_cpu, grads, torch.tensor(0.05), **OPTIONS["momentum-decay-nesterov"])

    eager = Bucket(ODD_SIZES, torch.float32, torch.float32, momentum=0.9)
    compiled = eager.clone()
    compiled_step = torch.compile(step, fullgraph=True, backend="aot_eager")
    for _ in range(4):
        grads = eager.grads()
        step(eager, grads)
        compiled_step(compiled, grads)
    for p, q in zip(compiled.params, eager.params):
        assert torch.equal(p, q)
    assert torch.equal(compiled.history, eager.history)
    assert torch.equal(compiled.momentum_buffer, eager.momentum_buffer)
    assert int(compiled.step) == int(eager.step) == 4


# Every instruction-set copy of the kernel, on this machine: ATEN_CPU_CAPABILITY caps what the op
# picks. The parity tests rerun in a subprocess per capability the CPU has.
_CAPABILITIES = {"default": "DEFAULT", "avx2": "AVX2", "avx512": "AVX512"}


def _supported(capability: str) -> bool:
    order = ["default", "avx2", "avx512"]
    best = torch.backends.cpu.get_cpu_capability().lower()
    return best in order and order.index(capability) <= order.index(best)


def test_kernel_copy_in_use_is_reported():
    assert native_op.cpu_capability() in _CAPABILITIES.values()
    if os.environ.get("TMSGD_EXPECT_CPU_CAPABILITY"):
        assert native_op.cpu_capability() == os.environ["TMSGD_EXPECT_CPU_CAPABILITY"]


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
         "-k", "parity or kernel_copy_in_use"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_mutated_tensors_get_new_versions():
    """Like torch's in-place ops: autograd notices a param stepped after it was saved."""
    w = torch.nn.Parameter(torch.randn(5))
    loss = (w * w).sum()  # saves w for backward
    state = Bucket([5], torch.float32, torch.float32, momentum=0.9)
    state.params = [w]
    versions = [t._version for t in (w, state.history, state.momentum_buffer, state.step)]
    with torch.no_grad():
        state.run(native_cpu, [torch.ones(5)], momentum=0.9)
    after = [t._version for t in (w, state.history, state.momentum_buffer, state.step)]
    assert all(a > b for a, b in zip(after, versions)), (versions, after)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
