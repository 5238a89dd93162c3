"""The compiled extension tmsgd_kernels._C and its custom op tmsgd_kernels::tmsgd_step.

Importing this module loads the extension (if it was built), registers the op's fake kernel so
torch.compile traces the op without a graph break, and says which implementations the build
registered (CPU always, CUDA when it was built against a CUDA torch with a CUDA toolkit).
"""

from __future__ import annotations

import torch

from .step_options import StepOptions

OP_NAME = "tmsgd_kernels::tmsgd_step"
BUILD_HINT = (
    "build it with `pip install --no-build-isolation -e .` (or `python setup.py build_ext "
    "--inplace`) from the repository root"
)

try:
    from . import _C  # noqa: F401  (loading the library registers the op)

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


if _C is not None:

    @torch.library.register_fake(OP_NAME)
    def _tmsgd_step_fake(params, grads, history, momentum_buffer, step, lr, lr_tensor, b1, b2,
                         momentum, dampening, weight_decay, nesterov, maximize, switch_step,
                         grad_scale, found_inf) -> None:
        # The op returns nothing; what it mutates is declared in its schema.
        return None

    # Version counters: like torch's own in-place ops (and torch.library.custom_op), bump the
    # version of everything the op mutates, so autograd still detects a parameter stepped after
    # it was saved for backward. A C++ op gets no such kernel by default.
    _library = torch.library.Library("tmsgd_kernels", "IMPL")
    _after_inplace_or_view = torch._C._after_ADInplaceOrView_keyset

    def _tmsgd_step_bump_versions(keyset, params, grads, history, momentum_buffer, step, *rest):
        mutated = [*params, history, step]
        if momentum_buffer is not None:
            mutated.append(momentum_buffer)
        torch.autograd.graph.increment_version(mutated)
        return torch.ops.tmsgd_kernels.tmsgd_step.default.redispatch(
            keyset & _after_inplace_or_view, params, grads, history, momentum_buffer, step, *rest)

    _library.impl("tmsgd_step", _tmsgd_step_bump_versions, "ADInplaceOrView", with_keyset=True)


def tmsgd_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    history: torch.Tensor,
    momentum_buffer: torch.Tensor | None,
    step: torch.Tensor,
    options: StepOptions,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
) -> None:
    """Call the op with the kernel contract's arguments."""
    torch.ops.tmsgd_kernels.tmsgd_step(params, grads, history, momentum_buffer, step,
                                       *options.op_arguments(), grad_scale, found_inf)
