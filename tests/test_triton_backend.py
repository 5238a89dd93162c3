"""The triton backend as a whole: when it says it can run, importing without Triton, the op it
calls (registered for CPU and CUDA, opcheck, torch.compile), and which path a call takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from test_triton_step import DEVICE, MODES, REASON, Trajectory, counts_device, make_params

from tmsgd_kernels import ops
from tmsgd_kernels.backends import triton_backend
from tmsgd_kernels.step_scalars import StepScalars

needs_triton = pytest.mark.skipif(REASON is not None, reason=f"triton on {DEVICE}: {REASON}")
OP_NAME = f"{ops.NAMESPACE}::{ops.TRITON_OP}"
# Where the counts can be: the CPU (the host path) and, on a GPU, the params' device.
COUNT_MODES = [mode for mode in MODES if mode == "host" or DEVICE.type != "cpu"]


def test_unavailable_reason_follows_the_interpreter():
    """CPU tensors need the interpreter, CUDA tensors need it off; once the kernels are defined,
    their kind decides (Triton reads TRITON_INTERPRET only when a kernel is defined)."""
    code = (
        "import json, os, torch\n"
        "from tmsgd_kernels.backends import triton_backend as t\n"
        "cpu, cuda = torch.device('cpu'), torch.device('cuda')\n"
        "os.environ.pop('TRITON_INTERPRET', None)\n"
        "off = [t.unavailable_reason(cpu), t.unavailable_reason(cuda)]\n"
        "os.environ['TRITON_INTERPRET'] = '1'\n"
        "on = [t.unavailable_reason(cpu), t.unavailable_reason(cuda)]\n"
        "t.op()\n"  # defines the kernels, interpreted
        "os.environ.pop('TRITON_INTERPRET')\n"
        "defined = [t.unavailable_reason(cpu), t.unavailable_reason(cuda)]\n"
        "print(json.dumps([off, on, defined]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, check=True)
    off, on, defined = json.loads(result.stdout.strip().splitlines()[-1])
    assert "TRITON_INTERPRET=1" in off[0]
    assert (off[1] is None) == torch.cuda.is_available()
    assert on[0] is None and "unset it" in on[1]
    assert defined[0] is None and "unset it" in defined[1]


def test_imports_and_explains_itself_without_triton():
    """`pip install` does not require Triton: with it absent, the package, the backend module and
    the kernels package import, and the backend says how to get Triton."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, tmsgd_kernels, tmsgd_kernels.triton_kernels\n"
        "from tmsgd_kernels.backends import triton_backend\n"
        "print(triton_backend.unavailable_reason(torch.device('cpu')))\n"
        "print(tmsgd_kernels.available_backends('cpu')['triton'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("Triton is not installed") and "triton" in line for line in lines)


@needs_triton
def test_op_implemented_for_cpu_and_cuda():
    triton_backend.op()
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, key), key


@needs_triton
@pytest.mark.parametrize("mode", MODES)
def test_counts_device_picks_the_path(mode, monkeypatch):
    """Counts on the CPU take the host path; counts on the params' device (only a GPU's differs
    from the CPU) the device path."""
    from tmsgd_kernels.triton_kernels import op

    taken = []
    for path in ("_step_host_counts", "_step_device_counts"):
        real = getattr(op, path)
        monkeypatch.setattr(op, path, lambda *a, _real=real, _path=path: (
            taken.append(_path), _real(*a)))
    run = Trajectory(make_params([(3,), (5,)], torch.float32), mode)
    triton_backend.step(run.params, [torch.ones(3, device=DEVICE), torch.ones(5, device=DEVICE)],
                        run.delta_even, run.delta_odd, [], run.steps, StepScalars(0.1))
    on_device = counts_device(mode).type != "cpu"
    assert taken == ["_step_device_counts" if on_device else "_step_host_counts"]
    assert [int(s) for s in run.steps] == [1, 1]


def op_arguments(momentum: float, counts: torch.device) -> tuple:
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(n, generator=generator).to(DEVICE) for n in (5, 300)]
    grads = [torch.randn(n, generator=generator).to(DEVICE) for n in (5, 300)]
    even = [torch.zeros_like(p) for p in params]
    odd = [torch.zeros_like(p) for p in params]
    buffers = [torch.zeros_like(p) for p in params] if momentum else []
    steps = [torch.zeros((), dtype=torch.int64, device=counts) for _ in params]
    scalars = StepScalars(torch.tensor(0.05, device=DEVICE), momentum=momentum)
    return (params, grads, even, odd, buffers, steps, *scalars.op_arguments(),
            torch.tensor(2.0, device=DEVICE), torch.tensor(0.0, device=DEVICE))


@needs_triton
@pytest.mark.parametrize("mode", COUNT_MODES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_op_passes_opcheck(momentum, mode):
    """Schema (what it mutates), fake kernel and AOT dispatch of the op, with this kernel."""
    triton_backend.op()
    overload = getattr(getattr(torch.ops, ops.NAMESPACE), ops.TRITON_OP).default
    torch.library.opcheck(overload, op_arguments(momentum, counts_device(mode)))


@needs_triton
@pytest.mark.parametrize("mode", COUNT_MODES)
def test_compiled_step_fullgraph_matches_eager(mode):
    """The op is opaque to torch.compile: a step traces with no graph break and runs the same
    kernels as the eager one (bit-identical results). aot_eager: the graph around the op is
    run by torch itself, so no compiler is needed for CPU tensors."""
    def make():
        return Trajectory(make_params([(3,), (257,), (4, 4)], torch.float32), mode, momentum=0.9)

    eager, compiled = make(), make()

    def step(run, grads):
        triton_backend.step(run.params, grads, run.delta_even, run.delta_odd, run.buffers,
                            run.steps, StepScalars(0.05, momentum=0.9, switch_step=2))

    compiled_step = torch.compile(step, fullgraph=True, backend="aot_eager")
    generator = torch.Generator().manual_seed(1)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=generator).to(DEVICE) for p in eager.params]
        step(eager, grads)
        compiled_step(compiled, [g.clone() for g in grads])
    for a, b in zip(eager.params + eager.delta_even + eager.delta_odd + eager.buffers,
                    compiled.params + compiled.delta_even + compiled.delta_odd + compiled.buffers):
        assert torch.equal(a, b)
    assert [int(s) for s in compiled.steps] == [4, 4, 4]
