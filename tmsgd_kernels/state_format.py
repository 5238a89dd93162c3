"""Loading a checkpoint: every check before anything changes, and the formats TMSGD accepts.

Accepted per-parameter state (keys other than these are refused):
    TMSGD            step, delta_even, delta_odd[, momentum_buffer]  (the format state_dict saves)
    TMSGD version 1  step, d1 (the newest step), d2[, momentum_buffer]
    torch.optim.SGD  nothing, or momentum_buffer (a tensor or None): the buffer carries over and
                     the history starts at zero, which is the paper's switch from SGD to TM-SGD.
                     A carried buffer gets step 1, so that the next step uses it (a param's first
                     step would take buf = g); with no buffer the param starts at step 0.
Each state tensor keeps its dtype (torch.optim would cast it to the param's dtype, which loses
an fp32 history of a bf16 param); it moves to the param's device, and counts to the CPU unless
the group is capturable.
"""

from __future__ import annotations

from copy import deepcopy
from itertools import chain

import torch

from .local_tensors import like_param
from .param_state import real_view
from .validation import validate_hyperparameters

_V2 = {"step", "delta_even", "delta_odd"}
_V1 = {"step", "d1", "d2"}
_OPTIONAL = {"momentum_buffer"}


def _where(index: int) -> str:
    return f"the state of parameter {index} in the loaded state dict"


def _tensor(value: object, param: torch.Tensor, index: int, key: str) -> torch.Tensor:
    real = real_view(param)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{_where(index)}: '{key}' is {type(value).__name__}, not a tensor")
    if value.is_complex():
        value = torch.view_as_real(value)
    if value.shape != real.shape:
        raise ValueError(f"{_where(index)}: '{key}' has shape {tuple(value.shape)}, the "
                         f"parameter {tuple(real.shape)}" + (" (as its real view)"
                                                             if param.is_complex() else ""))
    if not value.is_floating_point():
        raise ValueError(f"{_where(index)}: '{key}' has dtype {value.dtype}, not floating point")
    value = like_param(value.detach(), param, f"{_where(index)}: '{key}'")
    return value.to(device=param.device, copy=True)


def _count(value: object, index: int) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{_where(index)}: 'step' must be a non-negative whole number, got "
                         f"{value!r}")
    return value


def _param_state(saved: object, param: torch.Tensor, index: int, capturable: bool) -> dict:
    """One param's state in TMSGD's format, converted from any accepted format."""
    if not isinstance(saved, dict):
        raise ValueError(f"{_where(index)} is {type(saved).__name__}, not a dict")
    keys = set(saved)
    buffer = saved.get("momentum_buffer")
    if keys - _OPTIONAL == set():  # torch.optim.SGD (or nothing saved yet)
        steps, even, odd = (1 if buffer is not None else 0), None, None
    elif keys - _OPTIONAL == _V2:
        steps = _count(saved["step"], index)
        even = _tensor(saved["delta_even"], param, index, "delta_even")
        odd = _tensor(saved["delta_odd"], param, index, "delta_odd")
    elif keys - _OPTIONAL == _V1:
        steps = _count(saved["step"], index)
        newest = _tensor(saved["d1"], param, index, "d1")
        older = _tensor(saved["d2"], param, index, "d2")
        # Step k wrote slot k % 2: after `steps` steps the newest is in slot (steps - 1) % 2.
        even, odd = (older, newest) if steps % 2 == 0 else (newest, older)
    else:
        raise ValueError(
            f"{_where(index)} has keys {sorted(map(str, keys))}; TMSGD loads its own format "
            f"{sorted(_V2 | _OPTIONAL)}, its version-1 format {sorted(_V1 | _OPTIONAL)} and "
            f"torch.optim.SGD's {sorted(_OPTIONAL)}")
    device = param.device if capturable else torch.device("cpu")
    state = {"step": torch.tensor(steps, dtype=torch.int64, device=device)}
    real = real_view(param)
    if even is not None:
        state["delta_even"], state["delta_odd"] = even, odd
    else:
        state["delta_even"] = torch.zeros_like(real)
        state["delta_odd"] = torch.zeros_like(real)
    if buffer is not None:
        state["momentum_buffer"] = _tensor(buffer, param, index, "momentum_buffer")
    return state


def prepare_load(optimizer, state_dict: dict) -> tuple[dict, list[dict]]:
    """The (state, param_groups) that loading `state_dict` gives `optimizer`, built without
    changing anything; raises ValueError if it does not fit."""
    if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= state_dict.keys():
        raise ValueError("an optimizer state_dict is a dict with 'state' and 'param_groups'")
    groups, saved_groups = optimizer.param_groups, deepcopy(state_dict["param_groups"])
    if len(saved_groups) != len(groups):
        raise ValueError(f"the loaded state dict has {len(saved_groups)} parameter groups, the "
                         f"optimizer {len(groups)}")
    new_groups = []
    for number, (saved, group) in enumerate(zip(saved_groups, groups)):
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(f"parameter group {number} has {len(saved['params'])} params in "
                             f"the loaded state dict and {len(group['params'])} in the optimizer")
        # Keys an older checkpoint (or torch.optim.SGD's) lacks take the optimizer's defaults;
        # the backend is this process's choice, not the checkpoint's.
        new = {**optimizer.defaults, **saved, "params": group["params"],
               "backend": group["backend"]}
        if "param_names" in group and "param_names" not in saved:
            new["param_names"] = group["param_names"]
        try:
            validate_hyperparameters(new)
        except ValueError as error:
            raise ValueError(f"parameter group {number} of the loaded state dict: {error}"
                             ) from error
        new["coefficients"] = tuple(float(c) for c in new["coefficients"])
        new_groups.append(new)
    id_map = dict(zip(chain.from_iterable(g["params"] for g in saved_groups),
                      chain.from_iterable(g["params"] for g in new_groups)))
    capturable = {id(p): g["capturable"] for g in new_groups for p in g["params"]}
    state = {}
    for index, saved in state_dict["state"].items():
        if index not in id_map:
            raise ValueError(f"the loaded state dict has state for parameter {index!r}, which "
                             f"no parameter group lists")
        param = id_map[index]
        state[param] = _param_state(saved, param, index, capturable[id(param)])
    return state, new_groups
