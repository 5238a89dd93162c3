"""The pointer table the table kernel walks: one int64 tensor on the params' device.

    rows        [0, ROW * T): per tensor t, at ROW * t + field: the addresses of its param,
                grad, delta_even, delta_odd, momentum buffer and step count, and its numel; with
                an 8-bit history also its row length, the addresses of both slots' scales, its
                number of blocks (int8_blocks.py) and the address of an 8-bit momentum
                buffer's scales
    block map   [ROW * T, ROW * T + 2 * B): per program b, the tensor it steps and the first
                element of its block (a multiple of BLOCK; with an 8-bit history counted in
                blocks of 256, so that a short block at a row's end counts as a whole one); the
                blocks of aligned tensors come first, the others after them

A row is padded to sixteen int64s, 128 bytes, so that the fields one program reads share a GPU
cache line. Fields nothing reads hold 0: the momentum address without momentum, the step address
when the counts live on the host (each launch then gets its class's count as an argument), the
8-bit history's fields with a float history, the buffer's scales without an 8-bit buffer.

Alignment is a property of each tensor, not of the table: the aligned blocks are launched with
the hint that lets the compiler use 16-byte vectors, the rest without it, so one odd view (a
param of one element in a flat buffer puts every later view off 16 bytes) costs only its own
tensors their vectors. A tensor is aligned when the addresses it streams are 16-byte aligned
and, with an 8-bit history, its rows are whole blocks (every block then starts at a multiple of
256 elements: the kernel addresses its blocks as one range; the others row by row).

The table's content is a function of the addresses, the shapes and the block size, which
layout.py keys its cache on.

CUDA-graph capture. A table built during capture is filled by a copy from pinned host memory that
the graph records and every replay repeats; until the first replay its device memory holds
garbage, so it never enters the cache (an eager step with the same addresses builds its own).
A table a graph uses, built during capture or found in the cache, must live as long as the
graph, which nothing here can see; it is kept as long as the tensor that owns the memory of the
first param it steps (the param, or the base it is a view of: a flattened buffer outlives the
views a step plan makes of it), memory the graph writes and which therefore outlives any usable
graph.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from . import int8_blocks
from .tensor_lists import TensorLists

ROW = 16
(PARAM, GRAD, DELTA_EVEN, DELTA_ODD, MOMENTUM, STEP, NUMEL, ROW_LENGTH, EVEN_SCALES, ODD_SCALES,
 BLOCKS, MOMENTUM_SCALES) = range(12)


@dataclass(frozen=True)
class PointerTable:
    table: torch.Tensor
    tensors: int
    blocks: int
    # The first `aligned_blocks` entries of the block map belong to aligned tensors (see above):
    # the kernel may say so for them (addresses read from memory carry no alignment facts
    # otherwise).
    aligned_blocks: int
    # Built while a CUDA graph was being captured: valid only once a replay has run its copy.
    captured: bool = False


# id(param) -> the tables and pinned buffers that graphs captured with that param use.
_retained: dict[int, list] = {}


def capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _retain(param: torch.Tensor, *objects: object) -> None:
    owner = param if param._base is None else param._base
    key = id(owner)
    kept = _retained.get(key)
    if kept is None:
        kept = _retained[key] = []
        weakref.finalize(owner, _retained.pop, key, None)
    kept.extend(o for o in objects if not any(o is k for k in kept))


def retain_if_capturing(table: PointerTable, lists: TensorLists) -> None:
    """A table used while capturing lives as long as the memory of the first param it steps."""
    if capturing(table.table.device):
        _retain(lists.params[0], table)


def retained() -> int:
    """Objects kept alive for captured graphs (tests)."""
    return sum(map(len, _retained.values()))


def _block_map(numels: torch.Tensor, aligned: torch.Tensor, block: int) -> tuple[torch.Tensor, int]:
    """(tensor, first element) per block, aligned tensors' blocks first; and how many those are.
    Vectorized: ResNet-50's 25.6M elements are 25,000 blocks of 1024."""
    order = torch.cat([aligned.nonzero().view(-1), (~aligned).nonzero().view(-1)])
    counts = (numels[order] + block - 1) // block
    owner = order.repeat_interleave(counts)
    first_block = torch.cumsum(counts, 0) - counts
    within = torch.arange(owner.numel(), dtype=torch.int64) - first_block.repeat_interleave(counts)
    block_map = torch.stack([owner, within * block], dim=1).view(-1)
    return block_map, int(counts[:int(aligned.sum())].sum())


def _row(p, g, even, odd, buf, count, even_scales, odd_scales, buffer_scales,
         counts_on_device: bool) -> tuple[list[int], bool, int]:
    """One tensor's row, whether it is aligned, and its elements as the block map counts them."""
    streams = [t.data_ptr() for t in (p, g, even, odd, buf) if t is not None]
    aligned = all(address % 16 == 0 for address in streams)
    row = [*streams[:4], streams[4] if buf is not None else 0,
           count.data_ptr() if counts_on_device else 0, p.numel()]
    if even_scales is None:
        return row, aligned, p.numel()
    blocks = int8_blocks.blocks(p)
    row += [int8_blocks.row_length(p), even_scales.data_ptr(), odd_scales.data_ptr(), blocks,
            buffer_scales.data_ptr() if buffer_scales is not None else 0]
    return row, aligned and int8_blocks.rows_of_whole_blocks(p), blocks * int8_blocks.SCALE_BLOCK


def build(lists: TensorLists, block: int, counts_on_device: bool) -> PointerTable:
    tensors = len(lists.params)
    rows, aligned, sizes = [], [], []
    absent = [None] * tensors
    for tensors_of_one in zip(lists.params, lists.grads, lists.delta_even, lists.delta_odd,
                              lists.momentum_buffers or absent, lists.steps,
                              lists.delta_even_scales or absent,
                              lists.delta_odd_scales or absent,
                              lists.momentum_scales or absent):
        row, is_aligned, size = _row(*tensors_of_one, counts_on_device)
        rows.append(row + [0] * (ROW - len(row)))
        aligned.append(is_aligned)
        sizes.append(size)
    block_map, aligned_blocks = _block_map(torch.tensor(sizes, dtype=torch.int64),
                                           torch.tensor(aligned, dtype=torch.bool), block)
    host = torch.cat([torch.tensor(rows, dtype=torch.int64).view(-1), block_map])
    device = lists.params[0].device
    captured = capturing(device)
    if captured:
        # A pageable host-to-device copy is not allowed during capture; a pinned one is, and is
        # recorded into the graph, so its pinned source must stay alive too.
        host = host.pin_memory()
        table = host.to(device, non_blocking=True)
        _retain(lists.params[0], host, table)
    else:
        table = host.to(device)
    return PointerTable(table, tensors, block_map.numel() // 2, aligned_blocks, captured)
