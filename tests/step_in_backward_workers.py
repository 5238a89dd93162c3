"""What each rank runs in tests/test_step_in_backward_distributed.py: FSDP2 (`fully_shard`) and
DDP with the step inside backward, beside the same engine with normal steps on the same ranks and
data. FSDP2 runs post-accumulate-grad hooks on the sharded DTensor params once their gradient
shard is reduced, so the hooks step this rank's shards; under DDP the step runs in its comm hook
after each bucket's all-reduce."""

from __future__ import annotations

from pathlib import Path

import torch.distributed.checkpoint as dcp
from distributed_workers import (
    HALF,
    OPTIONS,
    _checkpoint,
    _restore,
    batches,
    fsdp2_model_and_optimizer,
    make_model,
    snapshot,
    train,
)
from torch import nn
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
from torch.nn.parallel import DistributedDataParallel

from tmsgd_kernels import TMSGD, step_in_backward


def backward_only(model: nn.Module, data, rank: int, world_size: int) -> None:
    for x, y in data:
        x, y = x.chunk(world_size)[rank], y.chunk(world_size)[rank]
        nn.functional.mse_loss(model(x), y).backward()


def in_backward(rank: int, world_size: int, folder: Path, backend: str) -> dict:
    """Both engines in one process group (one spawn: most of a run's time)."""
    return {"fsdp2": fsdp2_in_backward(rank, world_size, folder, backend),
            "ddp": ddp_in_backward(rank, world_size, backend)}


def fsdp2_in_backward(rank: int, world_size: int, folder: Path, backend: str) -> dict:
    """Normal steps, and the step in backward with torch.distributed.checkpoint creating the
    state first (its state-creating optimizer.step() passes through) and a switch back to normal
    steps for the last half: both as this rank's shards and gathered, plus what hooks left.
    Also: a distributed checkpoint saved half way with the hooks on, restored into a model and
    optimizer built afresh (other weights) whose hooks take the last half."""
    data = batches()
    normal_model, normal_optimizer = fsdp2_model_and_optimizer(backend)
    train(normal_model, normal_optimizer, data, rank, world_size)

    model, optimizer = fsdp2_model_and_optimizer(backend)
    handle = step_in_backward(optimizer)
    get_optimizer_state_dict(model, optimizer)
    counts_after_creation = sorted({int(s["step"]) for s in optimizer.state.values()})
    backward_only(model, data[:HALF], rank, world_size)
    grads_left = [p.grad is not None for p in model.parameters()]
    dcp.save(_checkpoint(model, optimizer), checkpoint_id=str(folder / "in_backward"))
    handle.remove()
    train(model, optimizer, data[HALF:], rank, world_size)

    resumed, resumed_optimizer = fsdp2_model_and_optimizer(backend, seed=123)
    resumed_handle = step_in_backward(resumed_optimizer)
    _restore(resumed, resumed_optimizer, folder / "in_backward")
    backward_only(resumed, data[HALF:], rank, world_size)
    resumed_handle.remove()
    return {"counts_after_creation": counts_after_creation, "grads_left": grads_left,
            "resumed": snapshot(resumed, resumed_optimizer, gather=False),
            "normal": snapshot(normal_model, normal_optimizer, gather=False),
            "in_backward": snapshot(model, optimizer, gather=False),
            "full": snapshot(model, optimizer)}


def ddp_model(backend: str):
    """DDP over the test MLP with a bucket per param or two (several comm-hook calls per
    backward) and gradients as bucket views."""
    model = make_model()
    ddp = DistributedDataParallel(model, bucket_cap_mb=1e-4, gradient_as_bucket_view=True)
    return ddp, TMSGD(model.parameters(), backend=backend, **OPTIONS)


def ddp_in_backward(rank: int, world_size: int, backend: str) -> dict:
    """Normal DDP steps; the step in DDP's comm hook, then back to normal steps; and two
    micro-batches per step folded in the comm hook against DDP's own accumulation (no_sync,
    then one step)."""
    data = batches()
    normal, normal_optimizer = ddp_model(backend)
    train(normal, normal_optimizer, data, rank, world_size)

    hooked, optimizer = ddp_model(backend)
    handle = step_in_backward(optimizer, ddp=hooked)
    backward_only(hooked, data[:HALF], rank, world_size)
    grads_zeroed = all(not p.grad.any() for p in hooked.parameters())
    handle.remove()
    train(hooked, optimizer, data[HALF:], rank, world_size)

    accumulated, accumulated_optimizer = ddp_model(backend)
    folded, folded_optimizer = ddp_model(backend)
    fold = step_in_backward(folded_optimizer, accumulation_steps=2, ddp=folded)
    for x, y in data:
        x, y = x.chunk(world_size)[rank], y.chunk(world_size)[rank]
        halves = list(zip(x.chunk(2), y.chunk(2)))
        with accumulated.no_sync():
            (nn.functional.mse_loss(accumulated(halves[0][0]), halves[0][1]) / 2).backward()
        (nn.functional.mse_loss(accumulated(halves[1][0]), halves[1][1]) / 2).backward()
        accumulated_optimizer.step()
        accumulated_optimizer.zero_grad(set_to_none=True)
        for part_x, part_y in halves:
            (nn.functional.mse_loss(folded(part_x), part_y) / 2).backward()
    fold.remove()
    return {"grads_zeroed": grads_zeroed,
            "normal": snapshot(normal.module, normal_optimizer),
            "in_backward": snapshot(hooked.module, optimizer),
            "accumulated": snapshot(accumulated.module, accumulated_optimizer),
            "folded": snapshot(folded.module, folded_optimizer)}
