"""What one call's tensors look like to the kernels, found once per set of addresses.

A Layout is either flat (every list lies back to back in one storage: one range per list, no
table) or a pointer table. It is cached, bounded, under a key of everything its content depends
on: each tensor's address and numel, the dtypes and device (which fix the block size), and where
the counts are. A hit is therefore always correct, even when a freed tensor's address is reused,
and the per-tensor checks run only when a layout is built.

The key also holds the current CUDA stream: a table is filled and used on the stream it was
built on, so its copy is ordered before every kernel that reads it, and when it is evicted the
caching allocator hands its memory out again only to later work of that stream. A table built
during CUDA-graph capture is not cached at all (pointer_table.py says why).

A call whose grads had to be copied into their params' layout is never cached: the copies are
new tensors every step, and caching them would only evict the layouts that are reused.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from itertools import chain

import torch

from ..flatten import one_range
from . import pointer_table
from .launch_rule import flat_config, table_config
from .tensor_checks import check_tensors, in_param_layout
from .tensor_lists import TensorLists

# Enough for every run of tensors of a large model plus a few generations of moved grads.
CACHE_SIZE = 64

_data_ptr = torch.Tensor.data_ptr
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


def _build(lists: TensorLists, counts_on_device: bool) -> Layout:
    numels = list(map(_numel, lists.params))
    total = sum(numels)
    device = lists.params[0].device
    first = next((i for i, n in enumerate(numels) if n), 0)
    flat = (not counts_on_device and total > 0
            and all(one_range(tensors) is not None for tensors in lists.streams()))
    if flat:
        block, warps = flat_config(total, device)
        return Layout(block, warps, total, first, None)
    block, warps = table_config(numels, device)
    _stats["tables"] += 1
    table = pointer_table.build(lists, block, counts_on_device)
    return Layout(block, warps, total, first, table)


def lookup(lists: TensorLists, counts_on_device: bool) -> tuple[Layout, TensorLists]:
    """The layout of `lists`, and the lists it describes (grads copied into their params'
    layout where their strides differ)."""
    params = lists.params
    # map over unbound methods: no Python frame per tensor (this runs every step).
    addressed = chain(*lists.streams(), lists.steps if counts_on_device else ())
    device = params[0].device
    # The raw handle (an int) of the current stream: no Stream object per step.
    stream = torch._C._cuda_getCurrentRawStream(device.index) if device.type == "cuda" else None
    key = (counts_on_device, device, stream, params[0].dtype, lists.delta_even[0].dtype,
           bool(lists.momentum_buffers), tuple(map(_numel, params)),
           tuple(map(_data_ptr, addressed)))
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
