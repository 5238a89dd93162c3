"""DTensor params (FSDP2's `fully_shard`, tensor parallelism): the optimizer keeps their state as
DTensors with the params' mesh and placements, so that a saved checkpoint is sharded like the
model, and the kernels step each rank's local shards as plain tensors, which is all the math
needs (the TM-SGD step is elementwise). A shard may be empty (uneven sharding of a short dim 0).
"""

from __future__ import annotations

import torch

try:
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # a torch built without torch.distributed
    DTensor = None
    distribute_tensor = None


def is_dtensor(tensor: object) -> bool:
    return DTensor is not None and isinstance(tensor, DTensor)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (the object itself, so that in-place updates reach the
    DTensor and the object is the same at every step), or a plain tensor unchanged."""
    return tensor._local_tensor if is_dtensor(tensor) else tensor


def locals_of(tensors: list) -> list:
    return [local(t) for t in tensors]


def same_distribution(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors are both plain, or both DTensors on one mesh with one placement."""
    if is_dtensor(a) != is_dtensor(b):
        return False
    return not is_dtensor(a) or (a.device_mesh == b.device_mesh and a.placements == b.placements)


def describe(tensor: torch.Tensor) -> str:
    if not is_dtensor(tensor):
        return "a plain tensor"
    return f"a DTensor with placements {tensor.placements} on {tensor.device_mesh}"


def like_param(value: torch.Tensor, param: torch.Tensor, where: str) -> torch.Tensor:
    """A loaded state tensor distributed as `param` is. A plain tensor holding the whole value (a
    consolidated checkpoint loaded on every rank) gives each rank its own shard without any
    communication. A DTensor state for a plain param, or one distributed differently from its
    DTensor param, is refused: converting it would need collectives inside load_state_dict
    (torch.distributed.checkpoint's set_optimizer_state_dict converts state dicts for models of
    either kind)."""
    if same_distribution(value, param):
        return value
    if is_dtensor(param) and not is_dtensor(value):
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements,
                                 src_data_rank=None)
    raise ValueError(f"{where} is {describe(value)} but its parameter is {describe(param)}; load "
                     f"it with torch.distributed.checkpoint.state_dict.set_optimizer_state_dict, "
                     f"or pass full tensors (DTensor.full_tensor())")
