"""Params that share memory cannot be stepped as independent tensors: a kernel would update the
shared elements twice, or race with itself (seen: 3% of 1M elements lost in the CPU kernel).
This check runs whenever the set of stepped params changes, before anything is changed."""

from __future__ import annotations

import torch


def _describe(index: int, param: torch.Tensor) -> str:
    return f"parameter {index} (shape {tuple(param.shape)}, strides {param.stride()})"


def dense_without_overlap(tensor: torch.Tensor) -> bool:
    """Whether the elements fill one memory range exactly once (any order of dimensions, as
    channels_last does): sorted by stride, each stride is the product of the sizes before."""
    if tensor.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((t, s) for s, t in zip(tensor.shape, tensor.stride()) if s != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def check_no_overlap(params: list[torch.Tensor]) -> None:
    """Raise ValueError if a param overlaps itself (an expanded, stride-0 view) or another.

    `params` must not repeat a tensor object (exact ties are stepped once; the caller drops
    repeats)."""
    spans = []
    for index, param in enumerate(params):
        if param.numel() == 0 or param.device.type == "meta":
            continue  # no memory to share
        if not dense_without_overlap(param):
            raise ValueError(
                f"TMSGD steps dense, non-overlapping params only: {_describe(index, param)} "
                f"has elements that share memory or gaps between them (an expanded or strided "
                f"view); give the optimizer a tensor of its own (.clone())")
        start = param.data_ptr()
        spans.append((param.device, start, start + param.numel() * param.element_size(), index))
    spans.sort(key=lambda span: (str(span[0]), span[1]))
    for before, after in zip(spans, spans[1:]):
        if before[0] == after[0] and after[1] < before[2]:
            raise ValueError(
                f"TMSGD cannot step params that share memory: "
                f"{_describe(before[3], params[before[3]])} and "
                f"{_describe(after[3], params[after[3]])} overlap; tie them as one Parameter or "
                f"give each its own storage")
