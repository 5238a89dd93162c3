"""What each rank runs in tests/test_distributed.py, and the single-process training it is
compared with. Every run trains the same small MLP on the same batches; a rank takes its own
contiguous half of each batch, so that the engines' averaged gradient is the full batch's."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from tmsgd_kernels import TMSGD

# Momentum with dampening, weight decay and a plain-SGD warm-up: every part of the state and of
# the step count matters to the trajectory.
OPTIONS = dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01, switch_step=2)
STEPS = 6
HALF = STEPS // 2


def make_model(seed: int = 0) -> nn.Sequential:
    """dim 0 of 5, 3 and 1: on two ranks the shards are uneven and the last ones empty."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 1))


def batches(steps: int = STEPS, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 7, generator=generator), torch.randn(size, 1, generator=generator))
            for _ in range(steps)]


def train(model: nn.Module, optimizer, data, rank: int = 0, world_size: int = 1,
          late_momentum: bool = False) -> None:
    """With late_momentum, the first half of the steps runs without momentum: the rest starts
    buffers for params that have already taken steps (the optimizer's `fresh` runs)."""
    for number, (x, y) in enumerate(data):
        if late_momentum:
            for group in optimizer.param_groups:
                group["momentum"] = OPTIONS["momentum"] if number >= HALF else 0.0
        x, y = x.chunk(world_size)[rank], y.chunk(world_size)[rank]
        optimizer.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor.detach().clone()


def snapshot(model: nn.Module, optimizer, gather: bool = True) -> dict:
    """Every param and its state by name: whole tensors (a collective for DTensors) with
    gather=True, else this rank's own shards."""
    take = full if gather else (lambda t: (t.to_local() if isinstance(t, DTensor) else t)
                                .detach().clone())
    result = {}
    for name, param in model.named_parameters():
        state = optimizer.state.get(param, {})
        result[name] = {"param": take(param),
                        **{key: (take(value) if key != "step" else int(value))
                           for key, value in sorted(state.items())}}
    return result


def single_process_run(backend: str, data, late_momentum: bool = False) -> dict:
    model = make_model()
    optimizer = TMSGD(model.parameters(), backend=backend, **OPTIONS)
    train(model, optimizer, data, late_momentum=late_momentum)
    return snapshot(model, optimizer)


# --- FSDP2 -------------------------------------------------------------------------------------

def fsdp2_model_and_optimizer(backend: str, seed: int = 0) -> tuple[nn.Module, TMSGD]:
    model = make_model(seed)
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model, TMSGD(model.parameters(), backend=backend, **OPTIONS)


def state_layout(model: nn.Module, optimizer) -> list[tuple]:
    """For each param: whether each history/momentum state is a DTensor placed like the param
    with the param's local shape, and the local shape (to see the uneven and empty shards)."""
    rows = []
    for name, param in model.named_parameters():
        for key, value in optimizer.state[param].items():
            if key == "step":
                rows.append((name, key, type(value).__name__, tuple(value.shape)))
                continue
            rows.append((name, key, isinstance(value, DTensor) and value.placements ==
                         param.placements and value.to_local().shape == param.to_local().shape,
                         tuple(param.to_local().shape)))
    return rows


def fsdp2_train(rank: int, world_size: int, folder: Path, backend: str) -> dict:
    model, optimizer = fsdp2_model_and_optimizer(backend)
    train(model, optimizer, batches(), rank, world_size, late_momentum=True)
    return {"layout": state_layout(model, optimizer), "full": snapshot(model, optimizer)}


def _checkpoint(model, optimizer) -> dict:
    return {"model": get_model_state_dict(model),
            "optim": get_optimizer_state_dict(model, optimizer)}


def _restore(model, optimizer, path: Path) -> None:
    state = _checkpoint(model, optimizer)  # creates the optimizer state to load into
    dcp.load(state, checkpoint_id=str(path))
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optim"])


def fsdp2_resume(rank: int, world_size: int, folder: Path, backend: str) -> dict:
    """Six steps uninterrupted, and three, a distributed checkpoint, a restore into a model and
    optimizer built afresh (other weights), three more: this rank's shards after each."""
    data = batches()
    model, optimizer = fsdp2_model_and_optimizer(backend)
    train(model, optimizer, data, rank, world_size)
    uninterrupted = snapshot(model, optimizer, gather=False)

    model, optimizer = fsdp2_model_and_optimizer(backend)
    train(model, optimizer, data[:HALF], rank, world_size)
    dcp.save(_checkpoint(model, optimizer), checkpoint_id=str(folder / "checkpoint"))
    model, optimizer = fsdp2_model_and_optimizer(backend, seed=123)
    _restore(model, optimizer, folder / "checkpoint")
    train(model, optimizer, data[HALF:], rank, world_size)
    return {"uninterrupted": uninterrupted, "resumed": snapshot(model, optimizer, gather=False)}


def fsdp2_save_and_continue(rank: int, world_size: int, folder: Path, backend: str) -> dict:
    """Three steps, a checkpoint (for a single process to load), three more steps."""
    data = batches()
    model, optimizer = fsdp2_model_and_optimizer(backend)
    train(model, optimizer, data[:HALF], rank, world_size)
    dcp.save(_checkpoint(model, optimizer), checkpoint_id=str(folder / "checkpoint"))
    saved = snapshot(model, optimizer)
    whole = StateDictOptions(full_state_dict=True)
    # A copy: like optimizer.state_dict(), it holds the live counts, which the steps advance.
    full_state = copy.deepcopy(get_optimizer_state_dict(model, optimizer, options=whole))
    # The full (gathered) state dict loaded into a model and optimizer built afresh.
    other, other_optimizer = fsdp2_model_and_optimizer(backend, seed=123)
    set_model_state_dict(other, get_model_state_dict(model, options=whole), options=whole)
    set_optimizer_state_dict(other, other_optimizer, full_state, options=whole)
    train(model, optimizer, data[HALF:], rank, world_size)
    return {"saved": saved, "final": snapshot(model, optimizer), "full_state": full_state,
            "full_state_loaded": snapshot(other, other_optimizer)}


def fsdp2_load_and_continue(rank: int, world_size: int, folder: Path, backend: str) -> dict:
    """Restore a checkpoint a single process saved, then the last three steps. Also: the same
    process's plain optimizer.state_dict() loaded on every rank with load_state_dict (each
    rank keeps its shard), and this rank's DTensor state refused by a plain-param optimizer."""
    model, optimizer = fsdp2_model_and_optimizer(backend, seed=123)
    _restore(model, optimizer, folder / "checkpoint")
    loaded = snapshot(model, optimizer)
    other, other_optimizer = fsdp2_model_and_optimizer(backend, seed=123)
    other_optimizer.load_state_dict(torch.load(folder / "plain_optimizer.pt"))
    plain_loaded = snapshot(other, other_optimizer)
    plain = make_model()
    plain_optimizer = TMSGD(plain.parameters(), backend=backend, **OPTIONS)
    try:
        plain_optimizer.load_state_dict(optimizer.state_dict())
        refusal = None
    except ValueError as error:
        refusal = str(error)
    train(model, optimizer, batches()[HALF:], rank, world_size)
    return {"loaded": loaded, "plain_loaded": plain_loaded, "refusal": refusal,
            "final": snapshot(model, optimizer)}


def fsdp2_state_creation(rank: int, world_size: int, folder: Path, backend: str) -> dict:
    """Training after get_optimizer_state_dict created the state, and without it."""
    data = batches()
    model, optimizer = fsdp2_model_and_optimizer(backend)
    before = snapshot(model, optimizer, gather=False)
    get_optimizer_state_dict(model, optimizer)
    created = snapshot(model, optimizer, gather=False)
    train(model, optimizer, data, rank, world_size)
    with_creation = snapshot(model, optimizer, gather=False)
    model, optimizer = fsdp2_model_and_optimizer(backend)
    train(model, optimizer, data, rank, world_size)
    return {"before": before, "created": created, "with_creation": with_creation,
            "without": snapshot(model, optimizer, gather=False)}


# --- DDP and ZeRO ------------------------------------------------------------------------------

def ddp_no_sync_accumulation(rank: int, world_size: int, folder: Path, backend: str) -> dict:
    """DDP with gradients as views of its buckets, each rank's half batch accumulated in two
    micro-batches, the first under no_sync (no all-reduce)."""
    model = DistributedDataParallel(make_model(), gradient_as_bucket_view=True)
    optimizer = TMSGD(model.parameters(), backend=backend, **OPTIONS)
    for x, y in batches():
        x, y = x.chunk(world_size)[rank], y.chunk(world_size)[rank]
        optimizer.zero_grad(set_to_none=False)  # bucket views stay in place
        (x1, x2), (y1, y2) = x.chunk(2), y.chunk(2)
        with model.no_sync():
            (nn.functional.mse_loss(model(x1), y1) / 2).backward()
        (nn.functional.mse_loss(model(x2), y2) / 2).backward()
        optimizer.step()
    return snapshot(model.module, optimizer)


def _zero(backend: str, seed: int = 0) -> tuple[nn.Module, ZeroRedundancyOptimizer]:
    model = DistributedDataParallel(make_model(seed))
    return model, ZeroRedundancyOptimizer(model.parameters(), optimizer_class=TMSGD,
                                          backend=backend, **OPTIONS)


def _zero_shards(model: nn.Module, optimizer: ZeroRedundancyOptimizer) -> dict:
    """The params (every rank has them all) and the state of the params this rank steps."""
    return {"params": {n: p.detach().clone() for n, p in model.module.named_parameters()},
            "state": snapshot(model.module, optimizer.optim)}


def zero_train_and_resume(rank: int, world_size: int, folder: Path, backend: str) -> dict:
    data = batches()
    model, optimizer = _zero(backend)
    train(model, optimizer, data, rank, world_size)
    uninterrupted = _zero_shards(model, optimizer)

    model, optimizer = _zero(backend)
    train(model, optimizer, data[:HALF], rank, world_size)
    optimizer.consolidate_state_dict(to=0)
    path = folder / "zero.pt"
    if rank == 0:
        torch.save({"model": model.module.state_dict(), "optim": optimizer.state_dict()}, path)
    dist.barrier()
    checkpoint = torch.load(path, weights_only=False)
    model, optimizer = _zero(backend, seed=123)
    model.module.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optim"])
    train(model, optimizer, data[HALF:], rank, world_size)
    return {"uninterrupted": uninterrupted, "resumed": _zero_shards(model, optimizer)}
