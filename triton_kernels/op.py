"""The Triton implementation of the op tmsgd_kernels::tmsgd_step_triton: `tmsgd_step_triton`,
which tmsgd_kernels/ops.py registers (schema from tmsgd_kernels/step_contract.py, fake kernel and
version-counter rule there) for CUDA and, for the interpreter, CPU.

Where the counts live picks the path:

host     counts on the CPU (capturable=False). They are read on the host with one stack; the
         tensors are grouped into classes that share what a count decides (history slot, first
         momentum step, warm-up), normally one, and each class is one launch that gets its count
         as an argument. The CPU counts are then advanced on the host. A found_inf is read on the
         host too (one .item()), and a skipped step launches nothing.
device   counts on the params' device (capturable=True): every program reads its own tensor's
         count through the pointer table, and a second launch advances them all unless
         found_inf, read on the device, is non-zero. Nothing is read on the host, except the
         one-element tensors (lr_tensor, grad_scale, found_inf) that are on the CPU: reading
         those costs no synchronization (the CUDA op reads them there too).

An 8-bit history (int8 codes in delta_even/delta_odd, their block scales in delta_even_scales/
delta_odd_scales) takes the same paths, in the kernel's quantized variant (quantized_update.py).
"""

from __future__ import annotations

import contextlib

import torch

from tmsgd_kernels.step_contract import StepScalars

from . import layout
from .count_kernel import launch_advance_counts
from .kernel_scalars import KernelScalars, kernel_scalars
from .step_kernel import launch_flat, launch_table
from .tensor_checks import check_call, check_host_counts
from .tensor_lists import TensorLists


def _device_guard(device: torch.device):
    # Triton launches on the current CUDA device: make it the params' device.
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def launch(found: layout.Layout, lists: TensorLists, count: int, args: KernelScalars) -> None:
    """One launch for tensors whose counts all fall in the class of `count`."""
    if found.table is None:
        launch_flat(lists, found.first, found.numel, found.block, found.warps, count, args)
    else:
        launch_table(found.table, lists, found.block, found.warps, count, False, args)


def _read_host_counts(steps: list[torch.Tensor]) -> list[int]:
    """All counts at once, checked as a whole (check_tensors leaves out the counts that the
    kernels do not read): one stack, or one cat where their shapes differ (a count of shape []
    and one of shape [1] both hold one element)."""
    try:
        try:
            together = torch.stack(steps)
        except RuntimeError:
            together = torch.cat([count.reshape(-1) for count in steps])
    except RuntimeError as error:
        raise ValueError(f"steps must be one-element int64 tensors, all on the CPU or all on the "
                         f"params' device: {error}") from error
    check_host_counts(steps, together)
    return together.view(-1).tolist()


def _step_host_counts(lists: TensorLists, scalars: StepScalars, grad_scale, found_inf) -> None:
    # The whole call's layout first: a build checks every tensor before anything changes.
    found, stepped = layout.lookup(lists, counts_on_device=False)
    counts = _read_host_counts(lists.steps)
    if found_inf is not None and found_inf.item() != 0:
        return
    params = lists.params
    args = kernel_scalars(scalars, grad_scale, None, params[0], params[0].device)
    if counts.count(counts[0]) == len(counts):  # the usual case: one count, one launch
        launch(found, stepped, counts[0], args)
    else:
        classes: dict[tuple, list[int]] = {}
        first_matters = scalars.momentum != 0
        for index, count in enumerate(counts):
            key = (count % 2, first_matters and count == 0, count >= scalars.switch_step)
            classes.setdefault(key, []).append(index)
        for indices in classes.values():
            # Subsets of the lists as given: each has a layout (and cache entry) of its own.
            launch(*layout.lookup(lists.subset(indices), counts_on_device=False),
                    counts[indices[0]], args)
    torch._foreach_add_(lists.steps, 1)


def _step_device_counts(lists: TensorLists, scalars: StepScalars, grad_scale, found_inf) -> None:
    found, lists = layout.lookup(lists, counts_on_device=True)
    if found_inf is not None and found_inf.device != lists.params[0].device:
        # A CPU found_inf with device params: read on the host, which costs no synchronization.
        if found_inf.item() != 0:
            return
        found_inf = None
    params = lists.params
    args = kernel_scalars(scalars, grad_scale, found_inf, params[0], params[0].device)
    launch_table(found.table, lists, found.block, found.warps, 0, True, args)
    launch_advance_counts(found.table, found_inf)


def run(lists: TensorLists, scalars: StepScalars, grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None, counts_on_device: bool) -> None:
    """The step of the kernel contract; `counts_on_device` picks the path (see the module
    docstring). Tests call it directly to run the device path on CPU tensors."""
    check_call(lists, scalars, grad_scale, found_inf)
    if not lists.params:
        return
    path = _step_device_counts if counts_on_device else _step_host_counts
    with _device_guard(lists.params[0].device):
        path(lists, scalars, grad_scale, found_inf)


def tmsgd_step_triton(params: list[torch.Tensor], grads: list[torch.Tensor],
                      delta_even: list[torch.Tensor], delta_odd: list[torch.Tensor],
                      delta_even_scales: list[torch.Tensor], delta_odd_scales: list[torch.Tensor],
                      momentum_buffers: list[torch.Tensor], momentum_scales: list[torch.Tensor],
                      steps: list[torch.Tensor], lr: float,
                      lr_tensor: torch.Tensor | None, b1: float, b2: float, momentum: float,
                      dampening: float, weight_decay: float, nesterov: bool, maximize: bool,
                      switch_step: int, grad_scale: torch.Tensor | None,
                      found_inf: torch.Tensor | None) -> None:
    """The op's implementation, with the op's arguments (tmsgd_kernels/step_contract.py)."""
    scalars = StepScalars(lr=lr, lr_tensor=lr_tensor, b1=b1, b2=b2, momentum=momentum,
                          dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                          maximize=maximize, switch_step=switch_step)
    lists = TensorLists(params, grads, delta_even, delta_odd, delta_even_scales,
                        delta_odd_scales, momentum_buffers, momentum_scales, steps)
    counts_on_device = bool(steps) and steps[0].device.type != "cpu"
    run(lists, scalars, grad_scale, found_inf, counts_on_device)
