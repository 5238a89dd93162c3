"""The pointer/size table the table kernel walks: built on the device once per layout and reused
while the params and grads stay at the same addresses.

One int64 tensor, in sections (T tensors, B blocks):
    [0, T)        param data_ptr          [T, 2T)   grad data_ptr
    [2T, 3T)      first history column     [3T, 4T)  numel
    [4T, 4T + B)  block -> tensor index    [4T + B, 4T + 2B)  block -> first element in it
Program b steps elements [start, start + BLOCK) of tensor index[b]. The history and momentum
columns of a tensor are its first column plus the element index, so they need no pointers.

The table's content is a function of its key (every data_ptr and numel, the device, dtype and
block size), so a hit is always correct even when a freed tensor's address is reused. Built once, a
step costs no host-to-device copy; a miss (a moved tensor, e.g. a new .grad after
zero_grad(set_to_none=True) on an allocator that does not hand back the same block) rebuilds it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

# The table kernel's alignment hint requires first columns that are multiples of this.
ALIGN_ELEMENTS = 8

# Enough for every bucket of a large model plus a few generations of moved grads.
CACHE_SIZE = 64


@dataclass(frozen=True)
class PointerTable:
    table: torch.Tensor
    tensors: int
    blocks: int
    # Every param/grad address is 16-byte aligned and every first column a multiple of 8.
    aligned: bool


_cache: OrderedDict[tuple, PointerTable] = OrderedDict()
_stats = {"hits": 0, "builds": 0}
# Tables used while a CUDA graph was being captured: a replay reads them at their captured
# address for as long as the graph lives, so they are never freed (not even when evicted).
_captured: list = []


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _build(
    params: list[torch.Tensor], grads: list[torch.Tensor], numels: list[int], block: int
) -> PointerTable:
    columns, offset = [], 0
    for n in numels:
        columns.append(offset)
        offset += n
    block_tensor, block_start = [], []
    for index, n in enumerate(numels):
        for start in range(0, n, block):
            block_tensor.append(index)
            block_start.append(start)
    host = torch.tensor(
        [p.data_ptr() for p in params] + [g.data_ptr() for g in grads] + columns + numels
        + block_tensor + block_start,
        dtype=torch.int64,
    )
    addresses = [t.data_ptr() for t in params + grads]
    aligned = all(a % 16 == 0 for a in addresses)
    aligned = aligned and all(c % ALIGN_ELEMENTS == 0 for c in columns)
    device = params[0].device
    if _capturing(device):
        # A pageable host-to-device copy is not allowed during capture; a pinned one is, and is
        # recorded into the graph, so its pinned source must stay alive too.
        host = host.pin_memory()
        _captured.append(host)
        table = host.to(device, non_blocking=True)
    else:
        table = host.to(device)
    return PointerTable(table, len(params), len(block_tensor), aligned)


def pointer_table(
    params: list[torch.Tensor], grads: list[torch.Tensor], numels: list[int], block: int,
    check: Callable[[list[torch.Tensor], list[torch.Tensor]], None] | None = None,
) -> PointerTable:
    """The table for these tensors, from the cache when none of them has moved; `check` runs
    before a table is built (a new layout), never on a hit."""
    # The dtype is not in the table, but `check` ran for one dtype only.
    key = (
        params[0].device,
        params[0].dtype,
        block,
        # map over the unbound method: no Python frame per tensor (this runs every step).
        tuple(map(torch.Tensor.data_ptr, params)),
        tuple(map(torch.Tensor.data_ptr, grads)),
        tuple(numels),
    )
    found = _cache.get(key)
    if found is not None:
        _cache.move_to_end(key)
        _stats["hits"] += 1
    else:
        if check is not None:
            check(params, grads)
        found = _build(params, grads, numels, block)
        _stats["builds"] += 1
        _cache[key] = found
        if len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    if _capturing(found.table.device):
        _captured.append(found)
    return found


def cache_stats() -> dict[str, int]:
    """Hits and builds since the process started (for tests and benchmarks)."""
    return dict(_stats)
