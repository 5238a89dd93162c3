"""The CUDA sources where no CUDA toolkit is needed: csrc/cuda_kernel.cu refuses, with a message
that says what to do, a toolkit older than its kernels need (setup.py checks the same before it
builds). The host compiler preprocesses the file with nvcc's version macros set by hand."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

SOURCE = os.path.join(os.path.dirname(__file__), "..", "csrc", "cuda_kernel.cu")
MESSAGE = "tmsgd_kernels needs CUDA 11.7 or newer"


def _preprocess(*defines: str) -> subprocess.CompletedProcess:
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    return subprocess.run([compiler, "-E", "-x", "c++", *defines, SOURCE], capture_output=True,
                          text=True)


def test_toolkit_older_than_11_7_is_refused() -> None:
    for major, minor in ((11, 6), (10, 2)):
        result = _preprocess(f"-D__CUDACC_VER_MAJOR__={major}", f"-D__CUDACC_VER_MINOR__={minor}")
        assert result.returncode != 0 and MESSAGE in result.stderr, (major, minor)


def test_supported_toolkits_pass_the_check() -> None:
    # Preprocessing goes on to the includes (absent here: no CUDA headers); the check is silent.
    for major, minor in ((11, 7), (12, 1), (13, 0)):
        result = _preprocess(f"-D__CUDACC_VER_MAJOR__={major}", f"-D__CUDACC_VER_MINOR__={minor}")
        assert MESSAGE not in result.stderr, (major, minor)


def test_host_compiler_alone_is_refused() -> None:
    """Without nvcc's macros the file is not being compiled by nvcc at all."""
    assert MESSAGE in _preprocess().stderr
