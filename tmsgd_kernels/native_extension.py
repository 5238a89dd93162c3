"""The compiled extension tmsgd_kernels._C: loading it registers the C++ (CPU) and CUDA kernels of
the op tmsgd_kernels::tmsgd_step, whose schema tmsgd_kernels/ops.py defines, and the C++
version-counter kernel of both ops (csrc/version_counter.cpp)."""

from __future__ import annotations

import torch

OP_NAME = "tmsgd_kernels::tmsgd_step"
BUILD_HINT = (
    "build it with `pip install --no-build-isolation -e .` (or `python setup.py build_ext "
    "--inplace`) from the repository root"
)

try:
    from . import _C  # noqa: F401  (loading the library registers the kernels)

    load_error: str | None = None
except ImportError as error:  # built with TMSGD_NO_EXTENSION=1, or never built
    _C = None
    load_error = f"the C++ extension tmsgd_kernels._C is not built ({error}); {BUILD_HINT}"


def has_kernel(dispatch_key: str) -> bool:
    """Whether the loaded extension registered an implementation for `dispatch_key` (CPU, CUDA)."""
    if _C is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, dispatch_key)


def cpu_capability() -> str | None:
    """The instruction set the CPU implementation runs: AVX512, AVX2, DEFAULT (None if unbuilt)."""
    return None if _C is None else _C.cpu_capability()
