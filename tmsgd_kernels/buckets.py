"""Buckets: the params of one group that share device, dtype and step count, with their history
in one flat buffer, so each backend steps a whole bucket in one pass.

Per-parameter optimizer state holds views into the bucket's buffers:
    step             the bucket's int64 0-dim step tensor (shared by its params)
    history          [2, *shape] view of the bucket's [2, N] history (slot step % 2 holds d2)
    momentum_buffer  [*shape] view of the bucket's [N] momentum buffer (momentum > 0 only)
Complex params are stepped as their real views, so their state has the real view's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# History rows are padded to a multiple of this many elements, so the second row starts on a
# 64-byte boundary (fp32) and kernels can use 16-byte vector accesses on both rows.
HISTORY_ROW_ALIGNMENT = 16


def real_view(tensor: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor


def allocate_state(
    params: list[torch.Tensor], momentum: float, history_dtype: torch.dtype | None, steps: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Zero state for one bucket: history [2, N >= total], momentum buffer or None, step."""
    reals = [real_view(p) for p in params]
    total = sum(r.numel() for r in reals)
    device, dtype = reals[0].device, reals[0].dtype
    columns = -(-total // HISTORY_ROW_ALIGNMENT) * HISTORY_ROW_ALIGNMENT
    history = torch.zeros(2, columns, dtype=history_dtype or dtype, device=device)
    buffer = torch.zeros(total, dtype=dtype, device=device) if momentum != 0 else None
    return history, buffer, torch.full((), steps, dtype=torch.int64, device=device)


@dataclass
class Bucket:
    params: list[torch.Tensor]
    history: torch.Tensor
    momentum_buffer: torch.Tensor | None
    step: torch.Tensor
    backend: object
    flat: object | None = None  # a flat_params.FlatLayout when the group has flat_params=True


def build_buckets(params: list[torch.Tensor], state, group: dict, backends: dict) -> list[Bucket]:
    """Allocate the buckets of `params` (all with grads), moving any existing per-param state
    into them. `backends` maps each device to its resolved backend module."""
    members: dict[tuple, list[torch.Tensor]] = {}
    for param in params:
        param_state = state[param]
        # A host read, but only when the layout changes (first step, new params, a load).
        steps = int(param_state["step"]) if "step" in param_state else 0
        members.setdefault((param.device, param.dtype, steps), []).append(param)

    buckets = []
    for (device, _, steps), bucket_params in members.items():
        history, momentum_buffer, step = allocate_state(
            bucket_params, group["momentum"], group["history_dtype"], steps
        )
        offset = 0
        for param in bucket_params:
            real = real_view(param)
            count = real.numel()
            param_state = state[param]
            history_view = history[:, offset : offset + count].view(2, *real.shape)
            if "history" in param_state:
                history_view.copy_(param_state["history"])
            new_state = {"step": step, "history": history_view}
            if momentum_buffer is not None:
                buffer_view = momentum_buffer[offset : offset + count].view(real.shape)
                if param_state.get("momentum_buffer") is not None:
                    buffer_view.copy_(param_state["momentum_buffer"])
                new_state["momentum_buffer"] = buffer_view
            state[param] = new_state
            offset += count
        buckets.append(Bucket(bucket_params, history, momentum_buffer, step, backends[device]))
    return buckets
