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
    from tmsgd_kernels import native_extension

    assert torch.version.cuda is not None, "this check needs a CUDA build of torch"
    assert native_extension.load_error is None, native_extension.load_error
    assert native_extension.has_kernel("CUDA")
    assert native_extension.has_kernel("CPU")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(native_extension.OP_NAME, "CUDA")


def test_cuda_backend_reports_only_a_missing_device() -> None:
    from tmsgd_kernels.backends import native_cuda

    reason = native_cuda.unavailable_reason(torch.device("cuda"))
    if torch.cuda.is_available():
        assert reason is None
    else:
        assert reason == "no CUDA device is available"


def test_library_embeds_device_code() -> None:
    """The kernels were compiled for the device, not only declared: the library carries a fatbin
    (readelf lists its .nv_fatbin section) and the kernels' host stubs."""
    import shutil
    import subprocess

    from tmsgd_kernels import native_extension

    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf is not installed")
    library = native_extension._C.__file__
    sections = subprocess.run([readelf, "-S", "-W", library], capture_output=True, text=True,
                              check=True).stdout
    assert ".nv_fatbin" in sections
    symbols = subprocess.run(["nm", "-C", library], capture_output=True, text=True,
                             check=True).stdout
    assert "tmsgd_step_kernel" in symbols and "increment_counts_kernel" in symbols
