"""What each rank runs in tests/test_distributed_int8.py (8-bit history under FSDP2 and
ZeroRedundancyOptimizer), and the single-process training it is compared with.

The model has params that take an 8-bit history (int8_history.eligible) in every shape the
sharding can give them, next to small ones that keep fp32:

    0.weight  (15, 300)   15 rows: shards of 8 and 7 rows; a row is a full block and a short one
    2.weight  (4100, 15)  rows of one short block each
    4.weight  (1, 4100)   one row of 17 blocks: all on rank 0, an empty shard on rank 1
    biases and nothing else: 1-D, fp32 history

Reference arithmetic. A rank computes its half batch's gradient and the engine averages the two
(FSDP2's reduce-scatter, DDP's all-reduce): with two ranks that is (g0 + g1) / 2, exact in any
order (one addition, a division by 2). One process on the full batch sums the eight samples'
terms in another order, and an 8-bit code is a step function of d_new: a difference in the last
bit can move a code by one (one code does, in the six steps with 8-bit momentum). So the
single-process reference takes the same two half-batch gradients (`accumulated_halves`) and is
compared bit for bit; the full batch's run, within one code.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from distributed_workers import HALF, OPTIONS, STEPS, snapshot
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

IN_FEATURES = 300
# distributed_workers' options with a learning rate for this model's 4100-wide layers: at 0.05
# the loss grows ten million fold in six steps, at 3e-4 it stays at its start's size.
INT8_OPTIONS = {**OPTIONS, "lr": 3e-4}
# The two 8-bit configurations, and the backend each runs on: the native CPU kernel steps an
# 8-bit history; only the torch step implements 8-bit momentum buffers so far.
CONFIGS = {
    "int8_history": ("cpu", dict(history_dtype=torch.int8)),
    "int8_history_and_momentum": ("torch", dict(history_dtype=torch.int8,
                                                momentum_dtype=torch.int8)),
}


def make_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(IN_FEATURES, 15), nn.Tanh(), nn.Linear(15, 4100), nn.Tanh(),
                         nn.Linear(4100, 1))


def batches(steps: int = STEPS, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(size, IN_FEATURES, generator=generator),
             torch.randn(size, 1, generator=generator)) for _ in range(steps)]


def make_optimizer(params, config: str) -> TMSGD:
    backend, dtypes = CONFIGS[config]
    return TMSGD(params, backend=backend, **INT8_OPTIONS, **dtypes)


def train(model: nn.Module, optimizer, data, rank: int = 0, world_size: int = 1,
          late_momentum: bool = False, accumulated_halves: bool = False) -> None:
    """A rank trains on its half of each batch. accumulated_halves (one process): the gradient
    is the mean of the two halves' gradients, as two ranks' engines average them. With
    late_momentum the first half of the steps runs without momentum, so the rest starts buffers
    (8-bit ones too) for params that have already taken steps."""
    for number, (x, y) in enumerate(data):
        if late_momentum:
            for group in optimizer.param_groups:
                group["momentum"] = OPTIONS["momentum"] if number >= HALF else 0.0
        optimizer.zero_grad(set_to_none=True)
        if accumulated_halves:
            for x_half, y_half in zip(x.chunk(2), y.chunk(2)):
                nn.functional.mse_loss(model(x_half), y_half).backward()
            for param in model.parameters():
                param.grad.div_(2)
        else:
            x, y = x.chunk(world_size)[rank], y.chunk(world_size)[rank]
            nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread, as every rank has (a BLAS reduction may split differently with
    more), for the one-process peers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def single_process(config: str, data, late_momentum: bool = False,
                   accumulated_halves: bool = True) -> tuple[nn.Module, TMSGD]:
    """The one-process peer (accumulated_halves=False: on the full batch)."""
    with one_thread():
        model = make_model()
        optimizer = make_optimizer(model.parameters(), config)
        train(model, optimizer, data, late_momentum=late_momentum,
              accumulated_halves=accumulated_halves)
    return model, optimizer


def state_layout(model: nn.Module, optimizer) -> dict:
    """Per param and state key: dtype, whether it is a DTensor placed like the param, and its
    local and global shapes (with the param's, to check the scales' rows against)."""
    rows = {}
    for name, param in model.named_parameters():
        rows[name] = {"param": (tuple(param.to_local().shape), tuple(param.shape))}
        for key, value in optimizer.state[param].items():
            if key == "step":
                rows[name][key] = (value.dtype, type(value).__name__)
                continue
            rows[name][key] = (value.dtype, isinstance(value, DTensor)
                               and value.placements == param.placements
                               and value.device_mesh == param.device_mesh,
                               tuple(value.to_local().shape), tuple(value.shape))
    return rows


# --- FSDP2 -------------------------------------------------------------------------------------

def fsdp2_model_and_optimizer(config: str, seed: int = 0) -> tuple[nn.Module, TMSGD]:
    model = make_model(seed)
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model, make_optimizer(model.parameters(), config)


def _checkpoint(model, optimizer) -> dict:
    return {"model": get_model_state_dict(model),
            "optim": get_optimizer_state_dict(model, optimizer)}


def restore(model, optimizer, path: Path) -> None:
    """A torch.distributed.checkpoint into `model` and `optimizer` (distributed or not)."""
    state = _checkpoint(model, optimizer)  # creates the optimizer state to load into
    dcp.load(state, checkpoint_id=str(path))
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optim"])


def _fsdp2_trainings(rank: int, world_size: int, config: str) -> dict:
    """All steps with momentum turned on half way (`late`: whole tensors and the state's
    layout), and with momentum from the start (`uninterrupted`: this rank's shards, and
    `uninterrupted_full`)."""
    model, optimizer = fsdp2_model_and_optimizer(config)
    train(model, optimizer, batches(), rank, world_size, late_momentum=True)
    late = {"layout": state_layout(model, optimizer), "full": snapshot(model, optimizer)}
    model, optimizer = fsdp2_model_and_optimizer(config)
    train(model, optimizer, batches(), rank, world_size)
    return {"late": late, "uninterrupted": snapshot(model, optimizer, gather=False),
            "uninterrupted_full": snapshot(model, optimizer)}


def gathered_state(model: nn.Module, optimizer: TMSGD, config: str) -> dict:
    """The gathered optimizer state dict (get_optimizer_state_dict with full_state_dict=True:
    `full_state`), and the state it gives another fresh model and optimizer through
    set_optimizer_state_dict (`full_state_loaded`); or the error the gathering raised
    (`full_state_error`: torch refuses the torch.dtype values in TMSGD's param groups, see
    test_distributed_int8's xfail)."""
    whole = StateDictOptions(full_state_dict=True)
    try:
        # A copy: it holds the live counts, which later steps advance.
        full_state = copy.deepcopy(get_optimizer_state_dict(model, optimizer, options=whole))
    except ValueError as error:
        return {"full_state_error": str(error)}
    other, other_optimizer = fsdp2_model_and_optimizer(config, seed=123)
    set_model_state_dict(other, get_model_state_dict(model, options=whole), options=whole)
    set_optimizer_state_dict(other, other_optimizer, full_state, options=whole)
    return {"full_state": full_state, "full_state_loaded": snapshot(other, other_optimizer)}


def _fsdp2_checkpoints(rank: int, world_size: int, folder: Path, config: str) -> dict:
    """Half the steps (`saved`: the state then, whole), then its gathered_state, and a
    distributed checkpoint in folder/checkpoint (for one process to load too) restored into a
    model and optimizer built afresh with other weights, the other half (`resumed`: this rank's
    shards)."""
    data = batches()
    model, optimizer = fsdp2_model_and_optimizer(config)
    train(model, optimizer, data[:HALF], rank, world_size)
    dcp.save(_checkpoint(model, optimizer), checkpoint_id=str(folder / "checkpoint"))
    result = {"saved": snapshot(model, optimizer), **gathered_state(model, optimizer, config)}
    model, optimizer = fsdp2_model_and_optimizer(config, seed=123)
    restore(model, optimizer, folder / "checkpoint")
    train(model, optimizer, data[HALF:], rank, world_size)
    return {**result, "resumed": snapshot(model, optimizer, gather=False)}


def _fsdp2_one_process_loads(rank: int, world_size: int, folder: Path, config: str) -> dict:
    """What one process saved after half the steps (save_one_process_checkpoint):
    - its distributed checkpoint restored (`loaded`: whole tensors and layout), the other half
      (`continued`);
    - its plain optimizer.state_dict() loaded with load_state_dict, each rank keeping its own
      rows (`plain_loaded`);
    - this rank's DTensor state offered to a plain-param optimizer (`refusal`: the error)."""
    model, optimizer = fsdp2_model_and_optimizer(config, seed=123)
    restore(model, optimizer, folder / "one_process")
    loaded = {"layout": state_layout(model, optimizer), "full": snapshot(model, optimizer)}
    other, other_optimizer = fsdp2_model_and_optimizer(config, seed=123)
    other_optimizer.load_state_dict(torch.load(folder / "one_process_optimizer.pt"))
    plain_loaded = {"layout": state_layout(other, other_optimizer),
                    "full": snapshot(other, other_optimizer)}
    plain = make_model()
    try:
        make_optimizer(plain.parameters(), config).load_state_dict(optimizer.state_dict())
        refusal = None
    except ValueError as error:
        refusal = str(error)
    train(model, optimizer, batches()[HALF:], rank, world_size)
    return {"loaded": loaded, "plain_loaded": plain_loaded, "refusal": refusal,
            "continued": snapshot(model, optimizer)}


def fsdp2_runs(rank: int, world_size: int, folder: Path, config: str) -> dict:
    """Every FSDP2 run of one configuration on this rank (one spawn of the ranks for all)."""
    return {**_fsdp2_trainings(rank, world_size, config),
            **_fsdp2_checkpoints(rank, world_size, folder, config),
            **_fsdp2_one_process_loads(rank, world_size, folder, config)}


def save_one_process_checkpoint(config: str, folder: Path) -> dict:
    """Half the steps in one process, saved for fsdp2_runs to load: with
    torch.distributed.checkpoint to folder/one_process, and its optimizer.state_dict() to
    folder/one_process_optimizer.pt; returns the state saved (whole tensors)."""
    model, optimizer = single_process(config, batches()[:HALF])
    dcp.save({"model": get_model_state_dict(model),
              "optim": get_optimizer_state_dict(model, optimizer)},
             checkpoint_id=str(folder / "one_process"))
    torch.save(optimizer.state_dict(), folder / "one_process_optimizer.pt")
    return snapshot(model, optimizer)


# --- ZeroRedundancyOptimizer -------------------------------------------------------------------

def _zero(config: str, seed: int = 0) -> tuple[nn.Module, ZeroRedundancyOptimizer]:
    backend, dtypes = CONFIGS[config]
    model = DistributedDataParallel(make_model(seed))
    return model, ZeroRedundancyOptimizer(model.parameters(), optimizer_class=TMSGD,
                                          backend=backend, **INT8_OPTIONS, **dtypes)


def _zero_shards(model: nn.Module, optimizer: ZeroRedundancyOptimizer) -> dict:
    """The params (every rank has them all) and the state of the params this rank steps."""
    return {"params": {n: p.detach().clone() for n, p in model.module.named_parameters()},
            "state": snapshot(model.module, optimizer.optim)}


def zero_train_and_resume(rank: int, world_size: int, folder: Path, config: str) -> dict:
    """All steps uninterrupted; and half, a consolidated checkpoint saved by rank 0 and loaded by
    every rank into a model and optimizer built afresh (other weights), the other half."""
    data = batches()
    model, optimizer = _zero(config)
    train(model, optimizer, data, rank, world_size)
    uninterrupted = _zero_shards(model, optimizer)

    model, optimizer = _zero(config)
    train(model, optimizer, data[:HALF], rank, world_size)
    optimizer.consolidate_state_dict(to=0)
    path = folder / "zero.pt"
    if rank == 0:
        torch.save({"model": model.module.state_dict(), "optim": optimizer.state_dict()}, path)
    dist.barrier()
    checkpoint = torch.load(path, weights_only=False)
    # What rank 0 consolidated, before load_state_dict empties other ranks' entries in place.
    consolidated = copy.deepcopy(checkpoint["optim"]["state"])
    model, optimizer = _zero(config, seed=123)
    model.module.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optim"])
    train(model, optimizer, data[HALF:], rank, world_size)
    return {"uninterrupted": uninterrupted, "resumed": _zero_shards(model, optimizer),
            "consolidated": consolidated}
