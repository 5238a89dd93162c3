"""Loading a checkpoint: every check before anything changes, and the formats TMSGD accepts.

Accepted per-parameter state (keys other than these are refused):
    TMSGD            step, delta_even, delta_odd[, momentum_buffer]  (the format state_dict saves;
                     8-bit codes add delta_even_scales, delta_odd_scales, and
                     momentum_buffer_scales for an 8-bit buffer)
    TMSGD version 1  step, d1 (the newest step), d2[, momentum_buffer]
    torch.optim.SGD  nothing, or momentum_buffer (a tensor or None): the buffer carries over and
                     the history starts at zero, which is the paper's switch from SGD to TM-SGD.
                     A carried buffer gets step 1, so that the next step uses it (a param's first
                     step would take buf = g); with no buffer the param starts at step 0.
Each state tensor keeps its dtype (torch.optim would cast it to the param's dtype, which loses
an fp32 history of a bf16 param); it moves to the param's device, and counts to the CPU unless
the group is capturable.

Anything else is refused with a ValueError that names the key at fault, before anything changes:
a checkpoint that is not exactly {'state': dict, 'param_groups': list of dicts with int (or
parameter-name) ids under 'params'}, an id given to two different params, state for an id no
group lists, counts that are not whole numbers in [0, 2**63 - 1], state tensors that are not
dense floating-point tensors with values (meta, sparse) of the param's (real-view) shape, and
invalid hyperparameters.
Group keys TMSGD does not know (a scheduler's initial_lr) are kept, as torch.optim keeps them.
"""

from __future__ import annotations

import math
import numbers
from copy import deepcopy

import torch

from . import int8_history
from .local_tensors import like_param
from .param_state import real_view
from .validation import DTYPE_KEYS, dtype_from_name, validate_hyperparameters

_V2 = {"step", "delta_even", "delta_odd"}
# An 8-bit history: int8 codes under the history keys and their block scales (int8_history.py).
_INT8 = _V2 | {"delta_even_scales", "delta_odd_scales"}
_V1 = {"step", "d1", "d2"}
_OPTIONAL = {"momentum_buffer", "momentum_buffer_scales"}
_INT64_MAX = 2**63 - 1


def _where(index: object) -> str:
    return f"the state of parameter {index!r} in the loaded state dict"


def _readable(value: torch.Tensor, what: str) -> None:
    """Refuse a tensor whose values cannot be read or stepped: no data (meta) or not dense."""
    if value.is_meta:
        raise ValueError(f"{what} is a meta tensor, which holds no values")
    if value.layout != torch.strided:
        raise ValueError(f"{what} is a {value.layout} tensor; TMSGD keeps dense state")


def _tensor(value: object, param: torch.Tensor, index: object, key: str) -> torch.Tensor:
    real = real_view(param)
    what = f"{_where(index)}: '{key}'"
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{what} is {type(value).__name__}, not a tensor")
    _readable(value, what)
    if value.is_complex():
        value = torch.view_as_real(value)
    if value.shape != real.shape:
        raise ValueError(f"{what} has shape {tuple(value.shape)}, the parameter "
                         f"{tuple(real.shape)}" + (" (as its real view)"
                                                   if param.is_complex() else ""))
    if not value.is_floating_point():
        raise ValueError(f"{what} has dtype {value.dtype}, not floating point")
    value = like_param(value.detach(), param, what)
    return value.to(device=param.device, copy=True)


def _int8_slot(saved: dict, param: torch.Tensor, index: object, key: str
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """An 8-bit history slot or momentum buffer: int8 codes shaped like the param and fp32 block
    scales shaped as int8_history makes them for it (loaded onto its device and distribution)."""
    codes, scales, scales_key = saved[key], saved[f"{key}_scales"], f"{key}_scales"
    real = real_view(param)
    rows = int8_history.rows_of(real)
    for value, name in ((codes, key), (scales, scales_key)):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{_where(index)}: {name!r} must be a tensor, got "
                             f"{type(value).__name__}")
        _readable(value, f"{_where(index)}: {name!r}")
    if codes.dtype != torch.int8 or codes.shape != real.shape:
        raise ValueError(f"{_where(index)}: {key!r} must hold int8 codes of shape "
                         f"{tuple(real.shape)}, got {codes.dtype} of shape {tuple(codes.shape)}")
    if rows is None:
        raise ValueError(f"{_where(index)}: {key!r} holds 8-bit codes, which a parameter of "
                         f"shape {tuple(real.shape)} and dtype {real.dtype} does not take")
    expected = int8_history.scales_shape(*rows)
    if scales.dtype != torch.float32 or tuple(scales.shape) != expected:
        raise ValueError(f"{_where(index)}: {scales_key!r} must be float32 of shape {expected}, "
                         f"got {scales.dtype} of shape {tuple(scales.shape)}")
    codes = like_param(codes.detach(), param, f"{_where(index)}: {key!r}").to(
        device=param.device, copy=True)
    return codes, int8_history.scales_like(scales.detach(), param)


def _count(value: object, index: object) -> int:
    """A count: a whole number in [0, 2**63 - 1] (the kernels count in int64), as an int, a
    whole float or a one-element real tensor (torch.optim keeps float32 counts)."""
    what = f"{_where(index)}: 'step'"
    if isinstance(value, torch.Tensor):
        _readable(value, what)
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{what} must be a one-element real tensor, got {value.dtype} of "
                             f"shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a non-negative whole number, got "
                         f"{type(value).__name__} {value!r}")
    if not isinstance(value, numbers.Integral):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise ValueError(f"{what} must be a non-negative whole number, got {value!r}")
    count = int(value)
    if not 0 <= count <= _INT64_MAX:
        raise ValueError(f"{what} must be in [0, 2**63 - 1] (the kernels count steps in "
                         f"int64), got {count}")
    return count


def _param_state(saved: object, param: torch.Tensor, index: object, capturable: bool) -> dict:
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
    elif keys - _OPTIONAL == _INT8:
        steps = _count(saved["step"], index)
        even = _int8_slot(saved, param, index, "delta_even")
        odd = _int8_slot(saved, param, index, "delta_odd")
    elif keys - _OPTIONAL == _V1:
        steps = _count(saved["step"], index)
        newest = _tensor(saved["d1"], param, index, "d1")
        older = _tensor(saved["d2"], param, index, "d2")
        # Step k wrote slot k % 2: after `steps` steps the newest is in slot (steps - 1) % 2.
        even, odd = (older, newest) if steps % 2 == 0 else (newest, older)
    else:
        raise ValueError(
            f"{_where(index)} has keys {sorted(map(str, keys))}; TMSGD loads its own format "
            f"{sorted(_V2 | _OPTIONAL)} (with an 8-bit history {sorted(_INT8 | _OPTIONAL)}), "
            f"its version-1 format {sorted(_V1 | _OPTIONAL)} and torch.optim.SGD's "
            f"{sorted(_OPTIONAL)}")
    device = param.device if capturable else torch.device("cpu")
    state = {"step": torch.tensor(steps, dtype=torch.int64, device=device)}
    real = real_view(param)
    if isinstance(even, tuple):  # 8-bit codes and scales
        state["delta_even"], state["delta_even_scales"] = even
        state["delta_odd"], state["delta_odd_scales"] = odd
    elif even is not None:
        state["delta_even"], state["delta_odd"] = even, odd
    else:
        state["delta_even"] = torch.zeros_like(real)
        state["delta_odd"] = torch.zeros_like(real)
    if "momentum_buffer_scales" in saved:
        if buffer is None:
            raise ValueError(f"{_where(index)} has 'momentum_buffer_scales' without a "
                             f"'momentum_buffer'")
        state["momentum_buffer"], state["momentum_buffer_scales"] = _int8_slot(
            saved, param, index, "momentum_buffer")
    elif buffer is not None:
        state["momentum_buffer"] = _tensor(buffer, param, index, "momentum_buffer")
    return state


def _check_structure(state_dict: object, group_count: int) -> None:
    """The checkpoint's shape: a dict of exactly 'state' (a dict) and 'param_groups' (a list of
    `group_count` dicts, each with a list of ids under 'params': ints as state_dict numbers
    params, or the parameter names torch.distributed.checkpoint gives)."""
    if not isinstance(state_dict, dict):
        raise ValueError(f"an optimizer state_dict is a dict with 'state' and 'param_groups', "
                         f"got {type(state_dict).__name__}")
    missing = {"state", "param_groups"} - state_dict.keys()
    unknown = state_dict.keys() - {"state", "param_groups"}
    if missing or unknown:
        raise ValueError(f"an optimizer state_dict is a dict with 'state' and 'param_groups'; "
                         f"this one lacks {sorted(missing)} and has {sorted(map(str, unknown))}")
    if not isinstance(state_dict["state"], dict):
        raise ValueError(f"the loaded state dict's 'state' is "
                         f"{type(state_dict['state']).__name__}, not a dict")
    groups = state_dict["param_groups"]
    if not isinstance(groups, (list, tuple)):
        raise ValueError(f"the loaded state dict's 'param_groups' is {type(groups).__name__}, "
                         f"not a list")
    if len(groups) != group_count:
        raise ValueError(f"the loaded state dict has {len(groups)} parameter groups in "
                         f"'param_groups', the optimizer {group_count}")
    for number, group in enumerate(groups):
        if not isinstance(group, dict):
            raise ValueError(f"parameter group {number} in the loaded state dict's "
                             f"'param_groups' is {type(group).__name__}, not a dict")
        ids = group.get("params")
        if not isinstance(ids, (list, tuple)) or not all(
                isinstance(i, (int, str)) and not isinstance(i, bool) for i in ids):
            raise ValueError(f"parameter group {number} of the loaded state dict: 'params' "
                             f"must be a list of parameter ids (ints, or the names "
                             f"torch.distributed.checkpoint uses), got {ids!r}")
        for key, value in group.items():
            if isinstance(value, torch.Tensor) and value.is_meta:
                raise ValueError(f"parameter group {number} of the loaded state dict: "
                                 f"{key!r} is a meta tensor, which holds no values")


def prepare_load(optimizer, state_dict: dict) -> tuple[dict, list[dict]]:
    """The (state, param_groups) that loading `state_dict` gives `optimizer`, built without
    changing anything; raises ValueError, naming the key, if it does not fit."""
    groups = optimizer.param_groups
    _check_structure(state_dict, len(groups))
    saved_groups = deepcopy(state_dict["param_groups"])
    new_groups, id_map = [], {}
    for number, (saved, group) in enumerate(zip(saved_groups, groups)):
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(f"parameter group {number} has {len(saved['params'])} params in "
                             f"the loaded state dict's 'params' and {len(group['params'])} in "
                             f"the optimizer")
        for saved_id, param in zip(saved["params"], group["params"]):
            # One id for two params would give one param's state to the other. An id repeats
            # legitimately where the optimizer lists one tensor twice (state_dict numbers it once).
            if id_map.setdefault(saved_id, param) is not param:
                raise ValueError(f"parameter id {saved_id} appears twice in the loaded state "
                                 f"dict's 'params' (group {number}), for two different params")
        # Keys an older checkpoint (or torch.optim.SGD's) lacks take the optimizer's defaults;
        # the backend is this process's choice, not the checkpoint's.
        new = {**optimizer.defaults, **saved, "params": group["params"],
               "backend": group["backend"]}
        for key in DTYPE_KEYS:  # saved by name (TMSGD.state_dict), or as dtypes
            new[key] = dtype_from_name(new[key])
        if "param_names" in group and "param_names" not in saved:
            new["param_names"] = group["param_names"]
        try:
            validate_hyperparameters(new)
        except ValueError as error:
            raise ValueError(f"parameter group {number} of the loaded state dict: {error}"
                             ) from error
        new["coefficients"] = tuple(float(c) for c in new["coefficients"])
        new_groups.append(new)
    capturable = {id(p): g["capturable"] for g in new_groups for p in g["params"]}
    state = {}
    for index, saved in state_dict["state"].items():
        if index not in id_map:
            raise ValueError(f"the loaded state dict's 'state' has an entry for parameter "
                             f"{index!r}, which no parameter group lists in 'params'")
        param = id_map[index]
        state[param] = _param_state(saved, param, index, capturable[id(param)])
    return state, new_groups
