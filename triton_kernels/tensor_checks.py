"""Checks that run before anything changes. Those of `check_call` cost O(1) and run every call;
`check_tensors` costs Python per tensor (about a microsecond each), so layout.py runs it only
when it builds a layout: a cache hit means the same tensors at the same addresses as a layout
already checked."""

from __future__ import annotations

import operator

import torch

from tmsgd_kernels.step_contract import StepScalars

from . import int8_blocks
from .tensor_lists import TensorLists

PARAM_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
HISTORY_DTYPES = PARAM_DTYPES
# An 8-bit history (int8 codes and their block scales) decodes to fp32: fp64 params keep a float
# history, whose update runs in fp64.
INT8_PARAM_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _describe(tensor: torch.Tensor) -> str:
    return (f"shape {tuple(tensor.shape)}, strides {tensor.stride()}, {tensor.dtype}, "
            f"{tensor.device}")


def _one_element(tensor: torch.Tensor | None, what: str, device: torch.device,
                 integers_allowed: bool) -> None:
    """lr_tensor, grad_scale, found_inf: one element, on the params' device or the CPU (as the
    C++ op requires: csrc/op_checks.h)."""
    if tensor is None:
        return
    real = tensor.is_floating_point() or (integers_allowed and not tensor.is_complex()
                                          and tensor.dtype != torch.bool)
    if tensor.numel() != 1 or not real:
        kind = "real" if integers_allowed else "floating-point"
        raise ValueError(f"{what} must be a one-element {kind} tensor, got shape "
                         f"{tuple(tensor.shape)} {tensor.dtype}")
    if tensor.device != device and tensor.device.type != "cpu":
        raise ValueError(f"{what} is on {tensor.device}; it must be on the params' device "
                         f"{device} or on the CPU")


def dense_without_overlap(tensor: torch.Tensor) -> bool:
    """Whether the elements fill one memory range exactly once, in any order of dimensions (as
    channels_last does): with its dimensions ordered by stride it is contiguous."""
    by_stride = sorted(range(tensor.dim()), key=tensor.stride, reverse=True)
    return tensor.permute(by_stride).is_contiguous()


def check_call(lists: TensorLists, scalars: StepScalars, grad_scale: torch.Tensor | None,
               found_inf: torch.Tensor | None) -> None:
    params = lists.params
    for name, tensors in zip(TensorLists._fields, lists):
        if name == "momentum_buffers":
            expected = len(params) if scalars.momentum != 0 else 0
            if len(tensors) != expected:
                raise ValueError(
                    f"momentum_buffers must hold one buffer per param when momentum != 0 and "
                    f"be empty when momentum == 0: got {len(tensors)} for {len(params)} params "
                    f"with momentum {scalars.momentum}")
        elif name == "momentum_scales":
            # An 8-bit buffer comes only with an 8-bit history (the same blocks) and momentum.
            if tensors and (len(tensors) != len(params) or not _quantized(lists)
                            or scalars.momentum == 0):
                raise ValueError(f"momentum_scales must be empty, or hold one tensor per param "
                                 f"with an int8 history and momentum != 0: got {len(tensors)} "
                                 f"for {len(params)} params, history dtype {_history(lists)}, "
                                 f"momentum {scalars.momentum}")
        elif name in ("delta_even_scales", "delta_odd_scales"):
            expected = len(params) if _quantized(lists) else 0
            if len(tensors) != expected:
                raise ValueError(f"{name} must hold one tensor per param with an int8 history "
                                 f"and be empty with a float history: got {len(tensors)} for "
                                 f"{len(params)} params, history dtype {_history(lists)}")
        elif len(tensors) != len(params):
            raise ValueError(f"got {len(tensors)} {name} for {len(params)} params")
    if not params:
        return
    if params[0].dtype not in PARAM_DTYPES:
        raise TypeError(f"the triton backend steps {PARAM_DTYPES} params, not {params[0].dtype}")
    if _quantized(lists):
        if params[0].dtype not in INT8_PARAM_DTYPES:
            raise TypeError(f"params[0] is {params[0].dtype}: an int8 history needs "
                            f"{INT8_PARAM_DTYPES} params")
    elif lists.delta_even[0].dtype not in HISTORY_DTYPES:
        raise TypeError(f"the triton backend keeps history in {HISTORY_DTYPES} or int8, not "
                        f"{lists.delta_even[0].dtype}")
    device = params[0].device
    _one_element(scalars.lr_tensor, "lr_tensor", device, integers_allowed=True)
    _one_element(grad_scale, "grad_scale", device, integers_allowed=False)
    _one_element(found_inf, "found_inf", device, integers_allowed=False)


def _quantized(lists: TensorLists) -> bool:
    return bool(lists.delta_even) and lists.delta_even[0].dtype == torch.int8


def _history(lists: TensorLists) -> str:
    return str(lists.delta_even[0].dtype) if lists.delta_even else "none"


def _check_int8(i: int, p: torch.Tensor, even_scales: torch.Tensor, odd_scales: torch.Tensor,
                buffer_scales: torch.Tensor | None) -> None:
    """Param i of an int8-history call: rows (dim-0 slices) that are ranges of memory, and both
    slots' scales (and an 8-bit buffer's) of their shape (int8_blocks.py)."""
    if p.dim() == 0:
        raise ValueError(f"params[{i}] is 0-dim: an int8 history needs params of one or more "
                         f"dimensions (its blocks lie within dim-0 slices)")
    rows, per_row = p.shape[0], int8_blocks.row_length(p)
    if rows > 1 and per_row and p.stride(0) != per_row:
        raise ValueError(f"params[{i}] ({_describe(p)}): an int8 history needs each dim-0 slice "
                         f"contiguous in memory (dim 0 outermost)")
    shape = int8_blocks.scales_shape(p)
    named = [("delta_even_scales", even_scales), ("delta_odd_scales", odd_scales)]
    if buffer_scales is not None:
        named.append(("momentum_scales", buffer_scales))
    for name, scales in named:
        if (scales.shape != shape or scales.dtype != torch.float32
                or scales.device != p.device or not scales.is_contiguous()):
            raise ValueError(f"{name}[{i}] ({_describe(scales)}) must be a contiguous fp32 "
                             f"tensor of shape {shape} on {p.device}: one scale per block of "
                             f"{int8_blocks.SCALE_BLOCK} elements of a dim-0 slice of params[{i}] "
                             f"({_describe(p)})")


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors of one shape put every element at the same offset (strides of
    size-one dimensions do not matter)."""
    return all(x == y for x, y, size in zip(a.stride(), b.stride(), a.shape) if size != 1)


def _check_like(what: str, tensor: torch.Tensor, param: torch.Tensor, dtype: torch.dtype,
                layout: bool) -> None:
    if (tensor.shape != param.shape or tensor.dtype != dtype or tensor.device != param.device
            or (layout and not _same_layout(tensor, param))):
        need = "shape, strides" if layout else "shape"
        raise ValueError(f"{what} ({_describe(tensor)}) must have the {need} and device of its "
                         f"param ({_describe(param)}) and dtype {dtype}")


def check_tensors(lists: TensorLists, counts_on_device: bool) -> None:
    """Every tensor against its param: grads in shape, dtype and device (their strides may differ:
    the caller copies those); state also in strides; counts, when the kernels read them, int64
    one-element tensors on the params' device."""
    first = lists.params[0]
    history_dtype = lists.delta_even[0].dtype
    absent = [None] * len(lists.params)
    buffers = lists.momentum_buffers or absent
    buffer_codes = bool(lists.momentum_scales)
    for i, (p, g, even, odd, buf, count, even_scales, odd_scales, buffer_scales) in enumerate(zip(
            lists.params, lists.grads, lists.delta_even, lists.delta_odd, buffers, lists.steps,
            lists.delta_even_scales or absent, lists.delta_odd_scales or absent,
            lists.momentum_scales or absent)):
        if p.dtype != first.dtype or p.device != first.device:
            raise ValueError(f"params must share one dtype and device: params[{i}] is "
                             f"{p.dtype} on {p.device}, params[0] {first.dtype} on {first.device}")
        if not dense_without_overlap(p):
            raise ValueError(f"params[{i}] ({_describe(p)}) must be dense and non-overlapping: "
                             f"the kernels step it as one range of memory")
        _check_like(f"grads[{i}]", g, p, p.dtype, layout=False)
        _check_like(f"delta_even[{i}]", even, p, history_dtype, layout=True)
        _check_like(f"delta_odd[{i}]", odd, p, history_dtype, layout=True)
        if buf is not None:
            _check_like(f"momentum_buffers[{i}]", buf, p,
                        torch.int8 if buffer_codes else p.dtype, layout=True)
        if even_scales is not None:
            _check_int8(i, p, even_scales, odd_scales, buffer_scales)
        if counts_on_device and (count.numel() != 1 or count.dtype != torch.int64
                                 or count.device != p.device):
            raise ValueError(f"steps[{i}] ({_describe(count)}) must be a one-element int64 "
                             f"tensor on the params' device")


def in_param_layout(params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """`grads`, with each one whose strides differ from its param's copied into the param's
    layout (the kernels read a grad as the same range of memory as its param)."""
    if all(_same_layout(g, p) for p, g in zip(params, grads)):
        return grads
    return [g if _same_layout(g, p) else torch.empty_like(p).copy_(g)
            for p, g in zip(params, grads)]


_dtype = operator.attrgetter("dtype")


def check_host_counts(steps: list[torch.Tensor], counts: torch.Tensor) -> None:
    """The counts read on the host, `counts` all of them in one tensor: each an int64 tensor of
    one element on the CPU. A C-level pass over the dtypes (one stack would promote an int32
    count), the rest O(1) for the whole list."""
    if (set(map(_dtype, steps)) != {torch.int64} or counts.numel() != len(steps)
            or counts.device.type != "cpu"):
        raise ValueError(f"steps must be one-element int64 tensors, all on the CPU or all on the "
                         f"params' device; together they are {_describe(counts)}")
