"""What one call's tensors look like to the kernels, found once per set of tensors.

A Layout is either flat (every list lies back to back in memory: one range per list, no table)
or a pointer table. It is cached, bounded, under a key of everything its content and the checks
that let it be built depend on: each tensor's address, shape, strides and dtype (so a tensor
replaced by one of another layout or dtype at a freed tensor's address is a miss, as is a
gradient re-viewed in another order), the device, where the counts are, and, when the kernels
read the counts, theirs too. The key is built by C-level maps over the tensors, with no Python
frame per tensor; the per-tensor checks run only when a layout is built.

The key holds no tensor's device: every address names one device (CUDA's unified address space
gives the GPUs and the host disjoint ranges), so the addresses stand for them; an empty tensor
may have address 0 anywhere, but the kernels never touch its memory.

The key also holds the current CUDA stream: a table is filled and used on the stream it was
built on, so its copy is ordered before every kernel that reads it, and when it is evicted the
caching allocator hands its memory out again only to later work of that stream. A table built
during CUDA-graph capture is not cached at all (pointer_table.py says why).

A call whose grads had to be copied into their params' layout is never cached: the copies are
new tensors every step, and caching them would only evict the layouts that are reused.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from dataclasses import dataclass
from itertools import chain

import torch

from . import int8_blocks, pointer_table
from .launch_rule import flat_config, table_config
from .tensor_checks import check_tensors, in_param_layout
from .tensor_lists import TensorLists

# Enough for every run of tensors of a large model plus a few generations of moved grads.
CACHE_SIZE = 64

# Unbound accessors, mapped over the tensors at C level (this runs every step).
_data_ptr = torch.Tensor.data_ptr
_stride = torch.Tensor.stride
_shape = operator.attrgetter("shape")
_dtype = operator.attrgetter("dtype")
_numel = torch.Tensor.numel


@dataclass(frozen=True)
class Layout:
    block: int
    warps: int
    numel: int  # all elements of one list
    first: int  # the first tensor with elements: where the flat ranges start
    table: pointer_table.PointerTable | None  # None: flat, with the counts on the host


_cache: OrderedDict[tuple, Layout] = OrderedDict()
_stats = {"hits": 0, "builds": 0, "tables": 0}


def _back_to_back(tensors: list[torch.Tensor]) -> bool:
    """Whether the tensors with elements lie end to end in memory, in list order. Each is dense
    (checked), so together they are one range, which the flat kernel walks from the first; a
    param and its other tensors share strides, so they map element for element."""
    end = None
    for tensor in tensors:
        if tensor.numel():
            if end is not None and tensor.data_ptr() != end:
                return False
            end = tensor.data_ptr() + tensor.numel() * tensor.element_size()
    return end is not None


def _build(lists: TensorLists, counts_on_device: bool) -> Layout:
    numels = list(map(_numel, lists.params))
    total = sum(numels)
    device = lists.params[0].device
    first = next((i for i, n in enumerate(numels) if n), 0)
    quantized = bool(lists.delta_even_scales)
    ranges = lists.streams()
    if quantized:
        # An 8-bit history's blocks lie in one range only where every row is whole blocks.
        ranges += (lists.delta_even_scales, lists.delta_odd_scales)
        if lists.momentum_scales:
            ranges += (lists.momentum_scales,)
    flat = (not counts_on_device and all(map(_back_to_back, ranges))
            and (not quantized or all(map(int8_blocks.rows_of_whole_blocks, lists.params))))
    # The kernels step an 8-bit history's blocks whole.
    smallest = int8_blocks.SCALE_BLOCK if quantized else 1
    if flat:
        block, warps = flat_config(total, device, smallest)
        return Layout(block, warps, total, first, None)
    if quantized:
        # The table counts a short block at a row's end as a whole one.
        numels = [int8_blocks.blocks(p) * int8_blocks.SCALE_BLOCK for p in lists.params]
    block, warps = table_config(numels, device, smallest)
    _stats["tables"] += 1
    table = pointer_table.build(lists, block, counts_on_device)
    return Layout(block, warps, total, first, table)


def _key(lists: TensorLists, counts_on_device: bool, device: torch.device) -> tuple:
    tensors = list(chain(*lists.streams(), lists.delta_even_scales, lists.delta_odd_scales,
                         lists.momentum_scales, lists.steps if counts_on_device else ()))
    # The raw handle (an int) of the current stream: no Stream object per step.
    stream = torch._C._cuda_getCurrentRawStream(device.index) if device.type == "cuda" else None
    # The number of params and whether there are buffers and scales fix which list each tensor is
    # from.
    return (counts_on_device, device, stream, len(lists.params), bool(lists.momentum_buffers),
            bool(lists.delta_even_scales), bool(lists.momentum_scales),
            tuple(map(_data_ptr, tensors)), tuple(map(_shape, tensors)),
            tuple(map(_stride, tensors)), tuple(map(_dtype, tensors)))


def lookup(lists: TensorLists, counts_on_device: bool) -> tuple[Layout, TensorLists]:
    """The layout of `lists`, and the lists it describes (grads copied into their params'
    layout where their strides differ)."""
    params = lists.params
    device = params[0].device
    key = _key(lists, counts_on_device, device)
    found = _cache.get(key)
    if found is not None:
        _cache.move_to_end(key)
        _stats["hits"] += 1
    else:
        check_tensors(lists, counts_on_device)
        grads = in_param_layout(params, lists.grads)
        if grads is not lists.grads:
            lists = lists._replace(grads=grads)
            found = _build(lists, counts_on_device)
        elif pointer_table.capturing(device):
            found = _build(lists, counts_on_device)
        else:
            found = _cache[key] = _build(lists, counts_on_device)
            if len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
        _stats["builds"] += 1
    if found.table is not None:
        pointer_table.retain_if_capturing(found.table, lists)
    return found, lists


def cache_stats() -> dict[str, int]:
    """Layout hits and builds, and tables built, since the process started (tests, benchmarks)."""
    return {**_stats, "cached": len(_cache)}
