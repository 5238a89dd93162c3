"""The TM-SGD step as custom ops: schema, fake kernel and version-counter rule, written once.

Two ops share them (docs/DESIGN.md section 4):
    tmsgd_kernels::tmsgd_step         the C++ kernels (csrc/): CPU and CUDA implementations
                                      registered by the extension tmsgd_kernels._C
    tmsgd_kernels::tmsgd_step_triton  the Triton kernels (triton_kernels/op.py registers them)

The kernel contract (every backend, the pure-PyTorch one included, takes these arguments):

    params            list, mutated. One device, one dtype (fp64, fp32, fp16, bf16; complex
                      params arrive as their real views). Any dense non-overlapping layout.
    grads             list, read. Same shapes, dtype and device as params (strides may differ).
    delta_even        list, mutated: per param, the step d[k] of its latest even k.
    delta_odd         list, mutated: per param, the step d[k] of its latest odd k.
                      Both have the param's shape and strides and one history dtype (fp64, fp32,
                      fp16, bf16) for the whole call.
    momentum_buffers  list, mutated: per param, in the params' dtype, or empty when momentum == 0.
    steps             list, mutated: per param, an int64 one-element tensor counting its
                      completed steps. On the CPU (capturable=False: everything that depends on
                      the count is decided on the host) or on the params' device (capturable=True:
                      the kernels read it there). Advanced by one, unless found_inf is non-zero.
    lr, lr_tensor     the learning rate: the float `lr`, or `lr_tensor` (one element, any real
                      dtype, on the params' device or the CPU) when given.
    b1, b2            delta-form coefficients: d_new = b1 * d1 + b2 * d2 - lr * u.
    momentum, dampening, weight_decay, nesterov, maximize
                      the direction u, as torch.optim.SGD defines it.
    switch_step       warm-up: a param whose count is below it takes the SGD step d_new = -lr * u.
    grad_scale        None, or a one-element float tensor: grads are divided by it.
    found_inf         None, or a one-element float tensor: when non-zero nothing at all changes.

A param with count k reads d2 from slot k % 2 (delta_even if k is even), d1 from the other slot,
and writes d_new over slot k % 2; on its first step (k == 0) the momentum buffer becomes g itself.
Math runs in fp32 for fp16/bf16/fp32 params and in fp64 for fp64 params.
"""

from __future__ import annotations

import torch

from . import native_extension  # noqa: F401  (loads the extension's kernels first)

NAMESPACE = "tmsgd_kernels"
NATIVE_OP = "tmsgd_step"
TRITON_OP = "tmsgd_step_triton"

# The signature after the op's name. Everything the step mutates is marked (x!).
_SIGNATURE = (
    "(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] delta_even, Tensor(c!)[] delta_odd, "
    "Tensor(d!)[] momentum_buffers, Tensor(e!)[] steps, float lr, Tensor? lr_tensor, float b1, "
    "float b2, float momentum, float dampening, float weight_decay, bool nesterov, "
    "bool maximize, int switch_step, Tensor? grad_scale, Tensor? found_inf) -> ()"
)

_LIBRARY = torch.library.Library(NAMESPACE, "DEF")
_AFTER_INPLACE_OR_VIEW = torch._C._after_ADInplaceOrView_keyset


def _fake(*args) -> None:
    # The op returns nothing; what it mutates is declared in the schema.
    return None


def _bump_written_then_redispatch(overload, written: list[int]):
    """The version-counter rule as a Python kernel, used only without the compiled extension
    (whose C++ kernel, csrc/version_counter.cpp, applies the same rule for a fraction of the host
    time): bump the version of every argument the schema marks as written, as torch's in-place
    ops do, so autograd still notices a param stepped after it was saved for backward."""

    def kernel(keyset, *args):
        torch.autograd.graph.increment_version(
            [t for i in written for t in (args[i] if isinstance(args[i], list) else [args[i]])])
        return overload.redispatch(keyset & _AFTER_INPLACE_OR_VIEW, *args)

    return kernel


def _define(name: str) -> None:
    _LIBRARY.define(name + _SIGNATURE)
    torch.library.register_fake(f"{NAMESPACE}::{name}", _fake, lib=_LIBRARY)
    if torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{name}", "ADInplaceOrView"):
        return  # the extension registered the version-counter kernel
    overload = getattr(getattr(torch.ops, NAMESPACE), name).default
    written = [i for i, argument in enumerate(overload._schema.arguments)
               if argument.alias_info is not None and argument.alias_info.is_write]
    _LIBRARY.impl(name, _bump_written_then_redispatch(overload, written), "ADInplaceOrView",
                  with_keyset=True)


_define(NATIVE_OP)
_define(TRITON_OP)


def register_triton_kernel(kernel, dispatch_keys: tuple[str, ...] = ("CUDA", "CPU")) -> None:
    """Register the Triton implementation of tmsgd_step_triton (CPU: under the interpreter)."""
    for key in dispatch_keys:
        _LIBRARY.impl(TRITON_OP, kernel, key)
