"""8-bit history (`history_dtype=torch.int8`): each history slot stored as int8 codes in the
param's shape and layout plus one fp32 scale per block of 256 consecutive elements of a dim-0
slice (a "row"). This module is the reference encoder every implementation matches bit for bit.

    scale = absmax(block) / 127                 (fp32, one rounding)
    code  = clamp(round_half_even(x / scale), -127, 127)   (fp32 division; 0 where scale == 0)
    x     = code * scale                        (decoding, fp32)

Blocks never cross rows, so FSDP2's Shard(0) shards and DCP's reshards keep whole blocks; the
last block of a row may be short. A row is the param's dim-0 slice, which must be contiguous in
memory (dim 0 outermost, the param dense: row-major or channels_last), so that a block is 256
consecutive elements of memory in every implementation.

Why 8 bits suffice here (docs/DESIGN.md section 1): an error e in a stored history value moves
the weights in the long run by (b1 + b2) / (1 - b1 - b2) times e, which is 0 for the paper's
coefficients; `error_factor` computes it, and coefficient sets whose factor exceeds
`MAX_ERROR_FACTOR` are refused for 8-bit history.
"""

from __future__ import annotations

import math

import torch

from .local_tensors import DTensor, distribute_tensor, is_dtensor, local, same_distribution
from .overlap import dense_without_overlap

BLOCK = 256
# Params with fewer elements, or one dimension, keep a history in their own dtype (as
# bitsandbytes keeps small tensors in 32 bits): their state is small and their scales would cost
# more than the codes save.
MIN_NUMEL = 4096
CODE_MAX = 127
# |b1 + b2| / |1 - b1 - b2| above this (heavy-ball momentum 0.9 written as coefficients has 9)
# makes storage errors add up instead of washing out: refused for 8-bit history.
MAX_ERROR_FACTOR = 1.0
_PARAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def error_factor(b1: float, b2: float) -> float:
    """How much a stored history error moves the weights in the long run, per unit of error."""
    denominator = abs(1.0 - b1 - b2)
    return math.inf if denominator == 0 else abs(b1 + b2) / denominator


def eligible(param: torch.Tensor) -> bool:
    """Whether `param` (a plain tensor, or a DTensor sharded on dim 0 or replicated) gets an
    8-bit history under history_dtype=torch.int8."""
    if is_dtensor(param) and not all(p.is_replicate() or (p.is_shard() and p.dim == 0)
                                     for p in param.placements):
        return False
    return rows_of(param) is not None


def rows_of(param: torch.Tensor) -> tuple[int, int] | None:
    """(rows, elements per row) when `param` gets an 8-bit history, else None: fp64 params (whose
    update runs in fp64), small or 1-D params, and params whose dim 0 is not outermost or that
    are not dense in memory keep a history in their own dtype."""
    if param.dtype not in _PARAM_DTYPES or param.dim() < 2 or param.numel() < MIN_NUMEL:
        return None
    rows = param.shape[0]
    per_row = param.numel() // rows
    if param.stride(0) != per_row or not dense_without_overlap(param):
        return None
    return rows, per_row


def scales_shape(rows: int, per_row: int) -> tuple[int, int]:
    return rows, -(-per_row // BLOCK)


def _memory_rows(tensor: torch.Tensor, rows: int, per_row: int) -> torch.Tensor:
    """The (rows, per_row) view of a tensor laid out like its param, in memory order."""
    return tensor.as_strided((rows, per_row), (per_row, 1), tensor.storage_offset())


def _blocks(values: torch.Tensor, rows: int, per_row: int) -> torch.Tensor:
    """(rows, blocks, 256) fp32 copy of a memory-ordered (rows, per_row) view, zero-padded."""
    padded = torch.nn.functional.pad(values.float(), (0, scales_shape(rows, per_row)[1] * BLOCK
                                                      - per_row))
    return padded.view(rows, -1, BLOCK)


def encode_into(values: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> None:
    """Store `values` (laid out like `codes`' param; any float dtype, read as fp32) as `codes`
    and `scales`, in place (plain tensors: a shard's own rows)."""
    if codes.numel() == 0:
        return
    if values.stride() != codes.stride():  # e.g. a d_new that took its gradient's layout
        values = torch.empty_like(codes, dtype=torch.float32).copy_(values)
    rows, per_row = scales.shape[0], codes.numel() // scales.shape[0]
    blocks = _blocks(_memory_rows(values, rows, per_row), rows, per_row)
    absmax = blocks.abs().amax(dim=2)
    scale = absmax / CODE_MAX
    ratio = torch.where(scale[..., None] == 0, 0.0, blocks / scale[..., None])
    quantized = torch.round(ratio).clamp_(-CODE_MAX, CODE_MAX).to(torch.int8)
    _memory_rows(codes, rows, per_row).copy_(quantized.view(rows, -1)[:, :per_row])
    scales.copy_(scale)


def decode(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The fp32 values `codes` and `scales` stand for, laid out like `codes` (plain tensors)."""
    out = torch.empty_like(codes, dtype=torch.float32)
    if codes.numel() == 0:
        return out
    rows, per_row = scales.shape[0], codes.numel() // scales.shape[0]
    blocks = _blocks(_memory_rows(codes, rows, per_row), rows, per_row)
    values = (blocks * scales[..., None]).view(rows, -1)[:, :per_row]
    _memory_rows(out, rows, per_row).copy_(values)
    return out


def zeros_for(param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and scales of an all-zero history for an eligible `param`, distributed like it
    (a DTensor's scales are sharded on their rows as the param is on dim 0)."""
    rows, per_row = rows_of(param)
    codes = torch.zeros_like(param, dtype=torch.int8)
    shape = scales_shape(rows, per_row)
    if not is_dtensor(param):
        return codes, torch.zeros(shape, dtype=torch.float32, device=param.device)
    local_rows = local(param).shape[0] if param.dim() else 0
    scales = DTensor.from_local(
        torch.zeros((local_rows, shape[1]), dtype=torch.float32, device=local(param).device),
        param.device_mesh, param.placements, run_check=False, shape=torch.Size(shape),
        stride=(shape[1], 1))
    return codes, scales


def scales_fit(scales: object, param: torch.Tensor) -> bool:
    """Whether `scales` are block scales for `param`'s codes as zeros_for makes them."""
    rows = rows_of(param)
    return (isinstance(scales, torch.Tensor) and rows is not None
            and scales.dtype == torch.float32 and scales.shape == scales_shape(*rows)
            and scales.device == param.device and scales.is_contiguous()
            and same_distribution(scales, param))


def scales_like(scales: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """Loaded scales (whole, or a DTensor placed as the param) as a fresh contiguous fp32 copy on
    the param's device, sharded on their rows as the param is on dim 0."""
    if is_dtensor(param) and not is_dtensor(scales):
        return distribute_tensor(scales.to(param.device, torch.float32).contiguous(),
                                 param.device_mesh, param.placements, src_data_rank=None)
    if is_dtensor(scales) and not same_distribution(scales, param):
        raise ValueError("8-bit history scales are distributed differently from their "
                         "parameter; load them with torch.distributed.checkpoint's "
                         "set_optimizer_state_dict")
    return scales.to(param.device, torch.float32, copy=True).contiguous()


def encode_like(values: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> None:
    """encode_into for tensors distributed like their param (each rank its own shard)."""
    encode_into(local(values), local(codes), local(scales))


def decode_like(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """decode for tensors distributed like their param: fp32 values distributed like `codes`."""
    values = decode(local(codes), local(scales))
    if not is_dtensor(codes):
        return values
    return DTensor.from_local(values, codes.device_mesh, codes.placements, run_check=False,
                              shape=codes.shape, stride=codes.stride())
