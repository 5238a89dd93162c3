"""The triton backend as a whole: when it says it can run, importing without Triton, the float64
oracle over many steps, and torch.compile(fullgraph=True) through the custom op."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from trajectory import run_against_oracle

from tmsgd_kernels import TMSGD
from tmsgd_kernels.backends import triton_backend, unavailable_reason

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
REASON = unavailable_reason("triton", DEVICE)
needs_triton = pytest.mark.skipif(REASON is not None, reason=f"triton on {DEVICE}: {REASON}")


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
        "t._op()\n"  # defines the kernels, interpreted
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
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=str)
def test_many_tensors_match_float64_oracle(dtype):
    """Tolerances come from the lead's trajectory.Tolerance (one eps of the storage dtypes per
    rounding, which also covers the interpreter's round-toward-zero bf16 stores)."""
    shapes = [(), (0,), (1,), (3,), (4097,), (7, 5)] + [(n,) for n in range(10, 30)]
    run_against_oracle(backend="triton", dtype=dtype, device=DEVICE, steps=8, shapes=shapes,
                       momentum=0.9, nesterov=True, weight_decay=0.01, switch_step=2)


@needs_triton
def test_compiled_step_fullgraph_matches_eager():
    """The custom op is opaque to torch.compile: opt.step traces with no graph break, and the
    compiled step runs the same kernels as the eager one (bit-identical results)."""
    shapes = [(3,), (257,), (4, 4)]

    def make():
        generator = torch.Generator().manual_seed(0)
        return [torch.nn.Parameter(torch.randn(s, generator=generator).to(DEVICE)) for s in shapes]

    eager_params, compiled_params = make(), make()
    options = dict(lr=0.05, momentum=0.9, switch_step=2, backend="triton")
    eager, compiled = TMSGD(eager_params, **options), TMSGD(compiled_params, **options)
    compiled_step = torch.compile(compiled.step, fullgraph=True)
    generator = torch.Generator().manual_seed(1)
    for _ in range(4):
        for a, b in zip(eager_params, compiled_params):
            g = torch.randn(a.shape, generator=generator).to(DEVICE)
            a.grad, b.grad = g.clone(), g.clone()
        eager.step()
        compiled_step()
    for a, b in zip(eager_params, compiled_params):
        assert torch.equal(a, b)
    assert int(compiled.state_dict()["state"][0]["step"]) == 4


@needs_triton
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_custom_op_passes_opcheck(momentum):
    """Schema (what it mutates), fake kernel and AOT dispatch of tmsgd_triton::step_bucket."""
    triton_backend._op()  # registers the op
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(n, generator=generator).to(DEVICE) for n in (5, 300)]
    grads = [torch.randn(n, generator=generator).to(DEVICE) for n in (5, 300)]
    history = torch.zeros(2, 305, device=DEVICE)
    buffer = torch.zeros(305, device=DEVICE) if momentum else None
    step = torch.zeros((), dtype=torch.int64, device=DEVICE)
    lr = torch.tensor(0.05, device=DEVICE)
    args = (params, grads, history, buffer, step, 0.0, lr, 0.5, -0.5, momentum, 0.0, 0.0, False,
            False, 0, torch.tensor(2.0, device=DEVICE), torch.tensor(0.0, device=DEVICE))
    torch.library.opcheck(torch.ops.tmsgd_triton.step_bucket.default, args)
