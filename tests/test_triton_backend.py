"""The triton implementation as a whole: when it says it can run, importing without Triton, the
op it is registered as, and which path a call takes. (Its arithmetic, opcheck and compiled calls
are the kernel contract's tests, tests/test_kernel_contract.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from kernel_contract import BY_NAME, Run, random_params

from tmsgd_kernels import ops
from tmsgd_kernels.implementations import choose, unavailable_reason

DEVICE = BY_NAME["triton-host"].device
REASON = unavailable_reason("triton", DEVICE)
needs_triton = pytest.mark.skipif(REASON is not None, reason=f"triton on {DEVICE}: {REASON}")
OP_NAME = f"{ops.NAMESPACE}::{ops.TRITON_OP}"


def test_unavailable_reason_follows_the_interpreter():
    """CPU tensors need the interpreter, CUDA tensors need it off; once the kernels are defined,
    their kind decides (Triton reads TRITON_INTERPRET only when a kernel is defined)."""
    code = (
        "import json, os, torch\n"
        "from tmsgd_kernels import implementations as i\n"
        "cpu, cuda = torch.device('cpu'), torch.device('cuda')\n"
        "os.environ.pop('TRITON_INTERPRET', None)\n"
        "off = [i.unavailable_reason('triton', cpu), i.unavailable_reason('triton', cuda)]\n"
        "os.environ['TRITON_INTERPRET'] = '1'\n"
        "on = [i.unavailable_reason('triton', cpu), i.unavailable_reason('triton', cuda)]\n"
        "i.choose('triton', cpu)\n"  # defines the kernels, interpreted
        "os.environ.pop('TRITON_INTERPRET')\n"
        "defined = [i.unavailable_reason('triton', cpu), i.unavailable_reason('triton', cuda)]\n"
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
    """`pip install` does not require Triton: with it absent, the package and the kernels package
    import, and the reason says how to get Triton."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, tmsgd_kernels, tmsgd_kernels.triton_kernels\n"
        "from tmsgd_kernels.implementations import unavailable_reason\n"
        "print(unavailable_reason('triton', torch.device('cpu')))\n"
        "print(tmsgd_kernels.available_backends('cpu')['triton'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("Triton is not installed") and "triton" in line for line in lines)


@needs_triton
def test_op_implemented_for_cpu_and_cuda():
    choose("triton", DEVICE)
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, key), key


@needs_triton
@pytest.mark.parametrize("name", ["triton-host", "triton-device"])
def test_counts_device_picks_the_path(name, monkeypatch):
    """Counts on the CPU take the host path; counts on the params' device the device path (on
    the CPU the harness calls that path below the op, since both devices are the CPU)."""
    from tmsgd_kernels.triton_kernels import op

    implementation = BY_NAME[name]
    taken = []
    for path in ("_step_host_counts", "_step_device_counts"):
        real = getattr(op, path)
        monkeypatch.setattr(op, path, lambda *a, _real=real, _path=path: (
            taken.append(_path), _real(*a)))
    run = Run(implementation, random_params([(3,), (5,)], torch.float32, DEVICE))
    run.step()
    assert taken == ["_step_device_counts" if implementation.counts_on_device
                     else "_step_host_counts"]
    assert [int(s) for s in run.steps] == [1, 1]
