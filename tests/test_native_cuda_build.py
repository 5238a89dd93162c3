"""The CUDA build check (.ci/cuda_build_check.sh): the extension built against a CUDA torch
registers the CUDA implementation of the op. Skipped unless TMSGD_EXPECT_CUDA_BUILD=1."""

from __future__ import annotations

import os

import pytest
import torch

pytestmark = pytest.mark.skipif(
    os.environ.get("TMSGD_EXPECT_CUDA_BUILD") != "1",
    reason="only in .ci/cuda_build_check.sh, which builds the extension with CUDA",
)


def test_extension_registers_cpu_and_cuda_implementations() -> None:
    from tmsgd_kernels import native_op

    assert torch.version.cuda is not None, "this check needs a CUDA build of torch"
    assert native_op.load_error is None, native_op.load_error
    assert native_op.has_kernel("CUDA")
    assert native_op.has_kernel("CPU")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(native_op.OP_NAME, "CUDA")


def test_cuda_backend_reports_only_a_missing_device() -> None:
    from tmsgd_kernels.backends import native_cuda

    reason = native_cuda.unavailable_reason(torch.device("cuda"))
    if torch.cuda.is_available():
        assert reason is None
    else:
        assert reason == "no CUDA device is available"
