"""The Triton step as the torch.library custom op `tmsgd_triton::step_bucket`.

A custom op with a fake kernel (rather than a triton_op) because the launch does host work that
a tracer cannot see through: it reads data_ptrs to find or build the pointer table. The op is
opaque to torch.compile, which therefore traces `opt.step` with it and no graph break.
"""

from __future__ import annotations

import contextlib

import torch
import triton.language as tl

from .flat_kernel import launch_flat
from .step_args import StepArgs
from .step_count import launch_advance_step
from .table_kernel import launch_table

PARAM_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
HISTORY_DTYPES = PARAM_DTYPES


def check_tensors(params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    """Per-tensor checks: O(len(params)) Python, about 1.3 us a tensor (measured: 217 us for
    ResNet-50's 161 on this machine), so the table path runs them only when it builds a table:
    a cache hit means the same addresses and sizes as a layout already checked, and both callers
    (TMSGD.step, functional.tmsgd) hand over contiguous, matching tensors anyway."""
    dtype, device = params[0].dtype, params[0].device
    if len(grads) != len(params):
        raise ValueError("grads must match params one to one")
    for p, g in zip(params, grads):
        if g.shape != p.shape or g.dtype != dtype or p.dtype != dtype:
            raise ValueError("params and grads must share one dtype and match in shape")
        if p.device != device or g.device != device:
            raise ValueError("params and grads must be on one device")
        if not (p.is_contiguous() and g.is_contiguous()):
            raise ValueError("the triton backend needs contiguous params and grads")


def _check_state(params, history, momentum_buffer, step, total: int) -> None:
    dtype, device = params[0].dtype, params[0].device
    if dtype not in PARAM_DTYPES:
        raise TypeError(f"the triton backend steps {PARAM_DTYPES} params, not {dtype}")
    if history.dtype not in HISTORY_DTYPES:
        raise TypeError(
            f"the triton backend keeps history in {HISTORY_DTYPES}, not {history.dtype}"
        )
    if history.dim() != 2 or history.shape[0] != 2 or history.shape[1] < total:
        raise ValueError(f"history must have shape [2, >= {total}], got {tuple(history.shape)}")
    if history.stride(1) != 1 or history.device != device:
        raise ValueError("history must be row-contiguous and on the params' device")
    if momentum_buffer is not None and (
        momentum_buffer.numel() < total or not momentum_buffer.is_contiguous()
        or momentum_buffer.device != device
    ):
        raise ValueError(f"momentum_buffer must be contiguous, on the params' device, >= {total}")
    if step.dim() != 0 or step.dtype != torch.int64 or step.device != device:
        raise ValueError("step must be an int64 0-dim tensor on the params' device")


def _one_range(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """A 1-D view over `tensors` if they lie back to back in one storage (as with flat_params),
    else None."""
    first = tensors[0]
    if len(tensors) == 1:
        return first.view(-1)
    storage = first.untyped_storage().data_ptr()
    end = first.data_ptr() + first.numel() * first.element_size()
    for t in tensors[1:]:
        if t.untyped_storage().data_ptr() != storage or t.data_ptr() != end:
            return None
        end += t.numel() * t.element_size()
    total = sum(t.numel() for t in tensors)
    return first.as_strided((total,), (1,), first.storage_offset())


def _device_guard(device: torch.device):
    # Triton launches on the current CUDA device: make it the params' device.
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


SCHEMA = (
    "step_bucket(Tensor(a!)[] params, Tensor[] grads, Tensor(b!) history, "
    "Tensor(c!)? momentum_buffer, Tensor(d!) step, float lr, Tensor? lr_tensor, float b1, "
    "float b2, float momentum, float dampening, float weight_decay, bool nesterov, "
    "bool maximize, int switch_step, Tensor? grad_scale, Tensor? found_inf) -> ()"
)


def step_bucket(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    history: torch.Tensor,
    momentum_buffer: torch.Tensor | None,
    step: torch.Tensor,
    lr: float,
    lr_tensor: torch.Tensor | None,
    b1: float,
    b2: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    switch_step: int,
    grad_scale: torch.Tensor | None,
    found_inf: torch.Tensor | None,
) -> None:
    """One TM-SGD step of a bucket: one update launch, then one step-counter launch."""
    if not params:
        return
    if len(grads) != len(params):
        raise ValueError("grads must match params one to one")
    numels = list(map(torch.Tensor.numel, params))
    _check_state(params, history, momentum_buffer, step, sum(numels))
    args = StepArgs(
        history=history, momentum_buffer=momentum_buffer, step=step, lr=lr, lr_tensor=lr_tensor,
        grad_scale=grad_scale, found_inf=found_inf, b1=b1, b2=b2, momentum=momentum,
        dampening=dampening, weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
        switch_step=switch_step,
        compute=tl.float64 if params[0].dtype == torch.float64 else tl.float32,
    )
    with _device_guard(params[0].device):
        flat_params = _one_range(params)
        flat_grads = _one_range(grads) if flat_params is not None else None
        if flat_grads is not None:
            check_tensors(params, grads)
            launch_flat(flat_params, flat_grads, args)
        else:
            launch_table(params, grads, numels, args, check_tensors)
        launch_advance_step(step, found_inf)
    # The kernels write through raw pointers: tell autograd, as an in-place torch op would.
    mutated = [*params, history, step]
    if momentum_buffer is not None:
        mutated.append(momentum_buffer)
    torch.autograd.graph.increment_version(mutated)


def _fake(params, grads, history, momentum_buffer, step, lr, lr_tensor, b1, b2, momentum,
          dampening, weight_decay, nesterov, maximize, switch_step, grad_scale, found_inf) -> None:
    return None


# Registered with torch.library.Library rather than the torch.library.custom_op decorator: the
# decorator's Python wrappers (autograd, version counters, default filling, alias checks) cost
# about 0.7 ms a call for ResNet-50's 161 tensors on this machine (0.13 ms without them), several
# times the ~0.2 ms an H100 needs to move that step's 614 MB (estimated from its bandwidth, not
# measured). The schema still declares every mutation, so torch.compile functionalizes it.
_LIBRARY = torch.library.Library("tmsgd_triton", "DEF")
_LIBRARY.define(SCHEMA)
_LIBRARY.impl("step_bucket", step_bucket, "CompositeExplicitAutograd")
torch.library.register_fake("tmsgd_triton::step_bucket", _fake, lib=_LIBRARY)
