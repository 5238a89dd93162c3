"""The pointer table the table kernel walks: one int64 tensor on the params' device.

    rows        [0, ROW * T): per tensor t, at ROW * t + field: the addresses of its param,
                grad, delta_even, delta_odd, momentum buffer and step count, and its numel
    block map   [ROW * T, ROW * T + 2 * B): per program b, the tensor it steps and the first
                element of its block (a multiple of BLOCK)

A row is padded to eight int64s, 64 bytes, so that the fields one program reads share a cache
line. Fields nothing reads hold 0: the momentum address without momentum, the step address when
the counts live on the host (each launch then gets its class's count as an argument).

The table's content is a function of the addresses, the numels and the block size, which is what
layout.py keys its cache on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tensor_lists import TensorLists

ROW = 8
PARAM, GRAD, DELTA_EVEN, DELTA_ODD, MOMENTUM, STEP, NUMEL = range(7)

# Tables used while a CUDA graph was being captured: a replay reads them at their captured
# address for as long as the graph lives, so they are never freed (not even when evicted).
_captured: list = []


@dataclass(frozen=True)
class PointerTable:
    table: torch.Tensor
    tensors: int
    blocks: int
    # Every address a program reads through is 16-byte aligned: the kernel may say so, which
    # lets the compiler use vector loads (addresses read from memory carry no alignment facts).
    aligned: bool


def capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def retain_if_capturing(table: PointerTable) -> None:
    if capturing(table.table.device):
        _captured.append(table)


def build(lists: TensorLists, block: int, counts_on_device: bool) -> PointerTable:
    rows, block_map, addresses = [], [], []
    momentum = lists.momentum_buffers or [None] * len(lists.params)
    for index, (p, g, even, odd, buf, count) in enumerate(zip(
            lists.params, lists.grads, lists.delta_even, lists.delta_odd, momentum, lists.steps)):
        numel = p.numel()
        streams = [t.data_ptr() for t in (p, g, even, odd, buf) if t is not None]
        if numel:
            addresses += streams
        rows += [*streams[:4], streams[4] if buf is not None else 0,
                 count.data_ptr() if counts_on_device else 0, numel, 0]
        for start in range(0, numel, block):
            block_map += [index, start]
    host = torch.tensor(rows + block_map, dtype=torch.int64)
    device = lists.params[0].device
    if capturing(device):
        # A pageable host-to-device copy is not allowed during capture; a pinned one is, and is
        # recorded into the graph, so its pinned source must stay alive too.
        host = host.pin_memory()
        _captured.append(host)
        table = host.to(device, non_blocking=True)
    else:
        table = host.to(device)
    aligned = all(address % 16 == 0 for address in addresses)
    return PointerTable(table, len(lists.params), len(block_map) // 2, aligned)
