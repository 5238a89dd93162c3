"""What only the C++ CPU kernel of tmsgd_kernels::tmsgd_step has: every instruction-set copy of it
runs the kernel contract (tests/test_kernel_contract.py, the `cpu` implementation) in a
subprocess per copy, chosen through ATEN_CPU_CAPABILITY; and a call without tensors, which the
dispatcher cannot route by itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kernel_contract import BY_NAME, LIST_NAMES

from tmsgd_kernels import native_extension
from tmsgd_kernels.coefficients import PAPER_COEFFICIENTS, delta_coefficients
from tmsgd_kernels.step_contract import StepScalars

CPU = BY_NAME["cpu"]
pytestmark = pytest.mark.skipif(CPU.reason() is not None, reason=f"cpu: {CPU.reason()}")

CONTRACT = Path(__file__).with_name("test_kernel_contract.py")


def test_empty_lists_are_not_a_call():
    """Without a tensor the dispatcher cannot pick a kernel by itself: name the CPU one, which
    then does nothing."""
    cpu = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    scalars = StepScalars.make(0.1, *delta_coefficients(PAPER_COEFFICIENTS), momentum=0.9)
    CPU.overload().redispatch(cpu, *([] for _ in LIST_NAMES), *scalars.arguments(), None, None)


# ATEN_CPU_CAPABILITY caps which copy the op picks; each copy the CPU has runs the contract.
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
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p",
         "no:logging", str(CONTRACT), f"{__file__}::test_kernel_copy_in_use_is_reported",
         # The cpu implementation's tests: ids "[cpu]" and "[cpu-...]".
         "-k", "[cpu] or [cpu- or kernel_copy_in_use"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1], result.stdout[-2000:]
