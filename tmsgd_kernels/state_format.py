"""The saved form of TMSGD's per-parameter state, and the checks a loaded state must pass.

Saved (canonical): step (int64 0-dim CPU tensor), d1 (the newest step W[k] - W[k-1]), d2 (the one
before), momentum_buffer (when momentum > 0); shapes are the param's real view. It does not depend
on which history slot is newest, on buckets, backend or device, so it loads anywhere.
"""

from __future__ import annotations

import torch

from .buckets import real_view
from .validation import validate_hyperparameters

_STATE_KEYS = {"step", "d1", "d2"}


def canonical_state(param_state: dict) -> dict | None:
    """The saved form of one param's state; None before its first completed step (all zero:
    the same as no state, so a step skipped by found_inf leaves the state_dict as it was)."""
    steps = int(param_state["step"])
    if steps == 0:
        return None
    history = param_state["history"]
    saved = {
        "step": torch.tensor(steps, dtype=torch.int64),
        "d1": history[(steps + 1) % 2].clone(),
        "d2": history[steps % 2].clone(),
    }
    if param_state.get("momentum_buffer") is not None:
        saved["momentum_buffer"] = param_state["momentum_buffer"].clone()
    return saved


def internal_state(saved: dict, param: torch.Tensor) -> dict:
    """The per-parameter form the optimizer steps from (buckets copy it in at the next step)."""
    steps = int(saved["step"])
    d1 = saved["d1"].to(param.device)
    history = torch.empty((2, *d1.shape), dtype=d1.dtype, device=param.device)
    history[steps % 2] = saved["d2"]
    history[(steps + 1) % 2] = d1
    restored = {"step": torch.tensor(steps, dtype=torch.int64, device=param.device),
                "history": history}
    if "momentum_buffer" in saved:
        restored["momentum_buffer"] = saved["momentum_buffer"].to(param.device)
    return restored


def check_state_dict_fits(optimizer, state_dict: dict) -> None:
    """Raise ValueError if `state_dict` cannot be loaded into `optimizer` (nothing is changed)."""
    if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= state_dict.keys():
        raise ValueError("a TMSGD state_dict is a dict with 'state' and 'param_groups'")
    saved_groups = state_dict["param_groups"]
    if len(saved_groups) != len(optimizer.param_groups):
        raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, the "
                         f"optimizer has {len(optimizer.param_groups)}")
    params = []
    for number, (saved, group) in enumerate(zip(saved_groups, optimizer.param_groups)):
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(f"parameter group {number} has {len(saved['params'])} params in the "
                             f"loaded state dict and {len(group['params'])} in the optimizer")
        options = {**optimizer.defaults, **{k: v for k, v in saved.items() if k != "params"}}
        validate_hyperparameters(options)
        params.extend(zip(saved["params"], group["params"]))
    index_to_param = dict(params)
    for index, saved in state_dict["state"].items():
        if index not in index_to_param:
            raise ValueError(f"loaded state dict has state for parameter {index}, which no "
                             f"parameter group lists")
        param = index_to_param[index]
        if not isinstance(saved, dict) or not _STATE_KEYS <= saved.keys():
            found = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(f"state of parameter {index} needs keys {sorted(_STATE_KEYS)}, has "
                             f"{found} (is it a TMSGD state_dict?)")
        shape = real_view(param).shape
        for key in ("d1", "d2", "momentum_buffer"):
            value = saved.get(key)
            if value is None:
                continue
            if not isinstance(value, torch.Tensor) or value.shape != shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise ValueError(f"state '{key}' of parameter {index} has shape {got}, the "
                                 f"parameter (real view) has {tuple(shape)}")
        step = saved["step"]
        if not isinstance(step, (int, torch.Tensor)) or int(step) < 0:
            raise ValueError(f"state 'step' of parameter {index} must be a non-negative count")
