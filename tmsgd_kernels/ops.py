"""The TM-SGD step as custom ops, with the schema generated from tmsgd_kernels/step_contract.py.

    tmsgd_kernels::tmsgd_step         the C++ kernels (csrc/): CPU and CUDA implementations,
                                      registered by loading the extension tmsgd_kernels._C
    tmsgd_kernels::tmsgd_step_triton  the Triton kernels (triton_kernels/op.py), registered here
                                      by `register_triton` once Triton can run

Both share the fake kernel (the op returns nothing; the schema declares every mutation, so
torch.compile can functionalize the call) and the version-counter rule: an ADInplaceOrView kernel
bumps the version of every argument the schema marks written, as torch's in-place ops do. The
extension registers that kernel in C++ (csrc/version_counter.cpp); without the extension the
Python kernel below does the same.
"""

from __future__ import annotations

import torch

from . import native_extension  # noqa: F401  (loads the extension's kernels)
from .step_contract import schema

NAMESPACE = "tmsgd_kernels"
NATIVE_OP = "tmsgd_step"
TRITON_OP = "tmsgd_step_triton"

_LIBRARY = torch.library.Library(NAMESPACE, "DEF")
_AFTER_INPLACE_OR_VIEW = torch._C._after_ADInplaceOrView_keyset


def _fake(*args) -> None:
    return None


def _bump_written_then_redispatch(overload, written: list[int]):
    """The version-counter rule as a Python kernel, for builds without the extension (its C++
    kernel costs a fraction of the host time)."""

    def kernel(keyset, *args):
        torch.autograd.graph.increment_version(
            [t for i in written for t in (args[i] if isinstance(args[i], list) else [args[i]])])
        return overload.redispatch(keyset & _AFTER_INPLACE_OR_VIEW, *args)

    return kernel


def _define(name: str):
    _LIBRARY.define(name + schema())
    torch.library.register_fake(f"{NAMESPACE}::{name}", _fake, lib=_LIBRARY)
    overload = getattr(getattr(torch.ops, NAMESPACE), name).default
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{name}",
                                                          "ADInplaceOrView"):
        written = [i for i, argument in enumerate(overload._schema.arguments)
                   if argument.alias_info is not None and argument.alias_info.is_write]
        _LIBRARY.impl(name, _bump_written_then_redispatch(overload, written), "ADInplaceOrView",
                      with_keyset=True)
    return overload


native_step = _define(NATIVE_OP)
triton_step = _define(TRITON_OP)

_triton_registered = False


def register_triton() -> None:
    """Register the Triton kernels as tmsgd_step_triton's CUDA and CPU (interpreter)
    implementation; imports Triton, so it is called only once Triton can run."""
    global _triton_registered
    if _triton_registered:
        return
    from .triton_kernels.op import tmsgd_step_triton

    for key in ("CUDA", "CPU"):
        _LIBRARY.impl(TRITON_OP, tmsgd_step_triton, key)
    _triton_registered = True
