"""One parameter's optimizer state (docs/DESIGN.md section 3): created like the param, and
converted or recreated when the param changed since the last step.

    step             int64 0-dim tensor: completed steps of this param (CPU, or the param's
                     device with capturable=True)
    delta_even       the step d[k] of the latest even k, shaped and laid out like the param
    delta_odd        the step d[k] of the latest odd k
    momentum_buffer  as torch.optim.SGD's, in the param's dtype (only once momentum was on);
                     with momentum_dtype=torch.int8, 8-bit codes like an 8-bit history slot's
    *_scales         with 8-bit codes under delta_even, delta_odd or momentum_buffer, their
                     block scales (int8_history.py)

Complex params are stepped as their real views, so their state has the real view's shape.
"""

from __future__ import annotations

import torch

from . import int8_history
from .local_tensors import like_param, same_distribution

HISTORY_KEYS = ("delta_even", "delta_odd")
# With an 8-bit history, each slot's block scales (int8_history.py).
SCALE_KEYS = {"delta_even": "delta_even_scales", "delta_odd": "delta_odd_scales"}
# With an 8-bit momentum buffer (momentum_dtype=torch.int8), its block scales.
BUFFER_SCALES_KEY = "momentum_buffer_scales"
_SCALES_OF = {**SCALE_KEYS, "momentum_buffer": BUFFER_SCALES_KEY}


def real_view(tensor: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor


def history_dtype(group: dict, param: torch.Tensor) -> torch.dtype:
    """The dtype a param's history is kept in: the group's history_dtype, else the param's; with
    torch.int8, the param's own dtype for params that keep a full-precision history
    (int8_history.eligible says which)."""
    wanted = group["history_dtype"]
    if wanted is torch.int8 and not int8_history.eligible(real_view(param)):
        return real_view(param).dtype
    return wanted or real_view(param).dtype


def step_device(group: dict, param: torch.Tensor) -> torch.device:
    """capturable=False keeps counts on the CPU (decisions on the host); True on the device."""
    return param.device if group["capturable"] else torch.device("cpu")


def _fits(value: object, like: torch.Tensor, dtype: torch.dtype) -> bool:
    return (isinstance(value, torch.Tensor) and value.shape == like.shape
            and value.dtype == dtype and value.device == like.device
            and value.stride() == like.stride() and same_distribution(value, like))


def _shaped_like(value: object, like: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == like.shape


def _converted(value: torch.Tensor, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`value`'s numbers in `like`'s layout, device and distribution, as `dtype`."""
    value = like_param(value, like, "a state tensor")
    return torch.empty_like(like, dtype=dtype).copy_(value)


def _float_slot(state: dict, key: str) -> torch.Tensor | None:
    """The slot's (or buffer's) values, decoded (and its scales dropped) if it holds 8-bit
    codes."""
    value = state.get(key)
    scales = state.pop(_SCALES_OF[key], None)
    if value is None or value.dtype != torch.int8:
        return value
    if scales is None:
        raise ValueError(f"the {key} state holds int8 codes without {_SCALES_OF[key]}")
    return int8_history.decode_like(value, scales)


def _fit_int8_slot(state: dict, key: str, real: torch.Tensor) -> None:
    """Make the slot (or buffer) 8-bit codes and scales for `real` (encoding whatever it held).
    """
    value, scales = state.get(key), state.get(_SCALES_OF[key])
    if value is None:
        state[key], state[_SCALES_OF[key]] = int8_history.zeros_for(real)
        return
    if (value.dtype == torch.int8 and _fits(value, real, torch.int8)
            and int8_history.scales_fit(scales, real)):
        return
    values = _float_slot(state, key)
    codes, new_scales = int8_history.zeros_for(real)
    int8_history.encode_like(like_param(values, real, "a state tensor"), codes, new_scales)
    state[key], state[_SCALES_OF[key]] = codes, new_scales


def prepare(state: dict, param: torch.Tensor, group: dict) -> dict | None:
    """Make `state` (this param's dict, changed in place) fit `param` and `group` for the next
    step. A param whose shape changed starts over (its history describes another tensor); a
    changed dtype, device or memory layout converts the numbers; nothing that fits is touched.

    Returns the entries of a new, zero momentum buffer (the buffer, and its scales if it is
    8-bit), not yet in `state`, when momentum was turned on for a param that has already taken
    steps: its first momentum step must give buf = g as in torch.optim.SGD, which the kernels do
    with a zero buffer and no dampening. The caller puts them into the state once that step is
    done."""
    real = real_view(param)
    dtype = history_dtype(group, param)
    for key, value in state.items():  # e.g. torch.optim.SGD's complex momentum buffer
        if isinstance(value, torch.Tensor) and value.is_complex():
            state[key] = torch.view_as_real(value)
    if any(key in state and not _shaped_like(state[key], real)
           for key in (*HISTORY_KEYS, "momentum_buffer")):
        state.clear()
    count = state.get("step")
    device = step_device(group, param)
    if count is None:
        # torch.optim.SGD's state written in directly: its buffer is in use (as load_state_dict
        # takes an SGD checkpoint, see state_format.py).
        carried = state.get("momentum_buffer") is not None
        state["step"] = torch.tensor(int(carried), dtype=torch.int64, device=device)
    elif not isinstance(count, torch.Tensor):  # e.g. a plain int written by the user
        state["step"] = torch.tensor(int(count), dtype=torch.int64, device=device)
    elif count.dtype != torch.int64 or count.device != device or count.dim() != 0:
        state["step"] = count.detach().reshape(()).to(device=device, dtype=torch.int64)
    for key in HISTORY_KEYS:
        if dtype is torch.int8:
            _fit_int8_slot(state, key, real)
            continue
        value = _float_slot(state, key)
        if value is None:
            state[key] = torch.zeros_like(real, dtype=dtype)
        elif not _fits(value, real, dtype):
            state[key] = _converted(value, real, dtype)
        else:
            state[key] = value  # the same tensor, or the values an 8-bit slot decoded to
    if group["momentum"] == 0:
        return None  # a buffer kept from earlier is left alone, as torch.optim.SGD does
    int8_buffer = dtype is torch.int8 and group["momentum_dtype"] is torch.int8
    if state.get("momentum_buffer") is None:
        if int8_buffer:
            codes, scales = int8_history.zeros_for(real)
            zero = {"momentum_buffer": codes, BUFFER_SCALES_KEY: scales}
        else:
            zero = {"momentum_buffer": torch.zeros_like(real)}
        if int(state["step"]) > 0:
            return zero
        state.update(zero)  # count 0: the kernels take buf = g
    elif int8_buffer:
        _fit_int8_slot(state, "momentum_buffer", real)
    else:
        buffer = _float_slot(state, "momentum_buffer")
        state["momentum_buffer"] = (buffer if _fits(buffer, real, real.dtype)
                                    else _converted(buffer, real, real.dtype))
    return None
