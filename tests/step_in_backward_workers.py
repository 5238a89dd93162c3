"""What each rank runs in tests/test_step_in_backward_distributed.py: FSDP2 (`fully_shard`) with
the step inside backward, beside FSDP2 with normal steps on the same ranks and data. FSDP2 runs
post-accumulate-grad hooks on the sharded DTensor params once their gradient shard is reduced,
so the hooks step this rank's shards."""

from __future__ import annotations

from pathlib import Path

from distributed_workers import (
    HALF,
    batches,
    fsdp2_model_and_optimizer,
    snapshot,
    train,
)
from torch import nn
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

from tmsgd_kernels import step_in_backward


def backward_only(model: nn.Module, data, rank: int, world_size: int) -> None:
    for x, y in data:
        x, y = x.chunk(world_size)[rank], y.chunk(world_size)[rank]
        nn.functional.mse_loss(model(x), y).backward()


def fsdp2_in_backward(rank: int, world_size: int, folder: Path, backend: str) -> dict:
    """Normal steps, and the step in backward with torch.distributed.checkpoint creating the
    state first (its state-creating optimizer.step() passes through) and a switch back to normal
    steps for the last half: both as this rank's shards and gathered, plus what hooks left."""
    data = batches()
    normal_model, normal_optimizer = fsdp2_model_and_optimizer(backend)
    train(normal_model, normal_optimizer, data, rank, world_size)

    model, optimizer = fsdp2_model_and_optimizer(backend)
    handle = step_in_backward(optimizer)
    get_optimizer_state_dict(model, optimizer)
    counts_after_creation = sorted({int(s["step"]) for s in optimizer.state.values()})
    backward_only(model, data[:HALF], rank, world_size)
    grads_left = [p.grad is not None for p in model.parameters()]
    handle.remove()
    train(model, optimizer, data[HALF:], rank, world_size)
    return {"counts_after_creation": counts_after_creation, "grads_left": grads_left,
            "normal": snapshot(normal_model, normal_optimizer, gather=False),
            "in_backward": snapshot(model, optimizer, gather=False),
            "full": snapshot(model, optimizer)}
