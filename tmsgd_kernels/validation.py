"""Checks that run before anything is changed: hyperparameters and gradients (one error
type for gradients, RuntimeError, whoever finds the problem)."""

from __future__ import annotations

import math
import warnings

import torch

from . import int8_history, plan_checks
from .coefficients import delta_coefficients, validate_coefficients
from .implementations import BACKEND_NAMES
from .local_tensors import describe, same_distribution

HISTORY_DTYPES = (None, torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int8)
# None keeps each buffer in its param's dtype, as torch.optim.SGD does.
MOMENTUM_DTYPES = (None, torch.int8)
# The group keys that hold dtypes. A state dict saves them by name ("int8"):
# torch.distributed.checkpoint's gathering (full_state_dict, cpu_offload) takes only tensors,
# numbers, strings and containers.
DTYPE_KEYS = ("history_dtype", "momentum_dtype")
_DTYPES_BY_NAME = {str(d).removeprefix("torch."): d for d in HISTORY_DTYPES if d is not None}


def dtype_name(value: object) -> object:
    """A dtype as the name a state dict saves; anything else unchanged."""
    return str(value).removeprefix("torch.") if isinstance(value, torch.dtype) else value


def dtype_from_name(value: object) -> object:
    """A saved dtype name as the dtype; anything else unchanged (validation judges it)."""
    return _DTYPES_BY_NAME.get(value, value) if isinstance(value, str) else value
PARAM_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_INT64_MAX = 2**63 - 1


def _number(value, what: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{what} must be a number or a one-element tensor, got shape "
                             f"{tuple(value.shape)}")
        if value.device.type != "cpu":
            # Not read: a device tensor would cost a synchronization (and break graph capture).
            if not value.is_floating_point():
                raise ValueError(f"{what} must be a floating-point tensor, got {value.dtype}")
            return 0.0
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value}")
    return float(value)


def validate_hyperparameters(options: dict) -> None:
    """Raise ValueError for any invalid hyperparameter of a param group (all keys present)."""
    lr = _number(options["lr"], "lr")
    if lr < 0:
        raise ValueError(f"Invalid learning rate: {lr}")
    momentum = _number(options["momentum"], "momentum")
    if momentum < 0:
        raise ValueError(f"Invalid momentum value: {momentum}")
    dampening = _number(options["dampening"], "dampening")
    if not 0.0 <= dampening <= 1.0:
        raise ValueError(f"Invalid dampening value: {dampening} (need 0 <= dampening <= 1)")
    weight_decay = _number(options["weight_decay"], "weight_decay")
    if weight_decay < 0:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    for flag in ("nesterov", "maximize", "capturable"):
        if not isinstance(options[flag], bool):
            raise ValueError(f"{flag} must be a bool, got {options[flag]!r}")
    if options["nesterov"] and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    validate_coefficients(options["coefficients"])
    switch_step = options["switch_step"]
    if (isinstance(switch_step, bool) or not isinstance(switch_step, int)
            or not 0 <= switch_step <= _INT64_MAX):
        raise ValueError(f"switch_step must be an int in [0, 2**63 - 1] (the kernels count "
                         f"steps in int64), got {switch_step!r}")
    validate_state_dtypes(options["history_dtype"], options["momentum_dtype"])
    if options["history_dtype"] is torch.int8:
        _warn_if_int8_errors_add_up(options["coefficients"])
    if options["backend"] not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {options['backend']!r}; choose one of {BACKEND_NAMES}")


def validate_state_dtypes(history_dtype: torch.dtype | None,
                          momentum_dtype: torch.dtype | None) -> None:
    if history_dtype not in HISTORY_DTYPES:
        raise ValueError(f"history_dtype must be one of {HISTORY_DTYPES}, got {history_dtype!r}")
    if momentum_dtype not in MOMENTUM_DTYPES:
        raise ValueError(f"momentum_dtype must be one of {MOMENTUM_DTYPES} (None: the param's "
                         f"dtype), got {momentum_dtype!r}")
    if momentum_dtype is torch.int8 and history_dtype is not torch.int8:
        raise ValueError("momentum_dtype=torch.int8 needs history_dtype=torch.int8 (an 8-bit "
                         "momentum buffer shares the history's blocks and params), got "
                         f"history_dtype={history_dtype!r}")


# Coefficient sets already warned about (once per process, not at every check).
_warned_int8: set[tuple[float, ...]] = set()


def _warn_if_int8_errors_add_up(coefficients) -> None:
    key = tuple(float(c) for c in coefficients)
    b1, b2 = delta_coefficients(key)
    factor = int8_history.error_factor(b1, b2)
    if factor > int8_history.MAX_ERROR_FACTOR and key not in _warned_int8:
        _warned_int8.add(key)
        warnings.warn(
            f"history_dtype=torch.int8 with coefficients {tuple(coefficients)}: a storage error "
            f"in the history moves the weights by {factor:.3g} times itself in the long run "
            f"(the paper's coefficients: 0), so 8-bit rounding errors add up; prefer a bf16 or "
            f"fp32 history for these coefficients", RuntimeWarning, stacklevel=4)


def check_gradients(params: list[torch.Tensor], grads: list[torch.Tensor], where: str) -> None:
    """Raise the clear error for the first gradient that cannot step its param (`where`: e.g.
    "group 1, " to name the param group); the pass is a C loop when the extension is built."""
    index = plan_checks.first_mismatched_grad(params, grads)
    if index >= 0:
        validate_gradient(params[index], grads[index], f"{where}parameter {index}")


def validate_gradient(param: torch.Tensor, grad: torch.Tensor, name: str) -> None:
    """Raise if `grad` cannot be used to step `param` (called before any change); `name` says
    which param it is, e.g. "group 0, parameter 3"."""
    where = f"{name} (shape {tuple(param.shape)})"
    if grad.is_sparse or grad.layout != torch.strided:
        raise RuntimeError(f"TMSGD does not support sparse gradients: {where} has a "
                           f"{grad.layout} gradient")
    if param.layout != torch.strided:
        raise RuntimeError(f"TMSGD supports only dense (strided) parameters: {where} is "
                           f"{param.layout}")
    if grad.shape != param.shape:
        raise RuntimeError(f"gradient of {where} has shape {tuple(grad.shape)}")
    if grad.dtype != param.dtype:
        raise RuntimeError(f"gradient of {where} has dtype {grad.dtype}, parameter {param.dtype}")
    if not same_distribution(grad, param):
        raise RuntimeError(f"gradient of {where} is {describe(grad)}, the parameter "
                           f"{describe(param)}")
    if grad.device != param.device:
        raise RuntimeError(f"gradient of {where} is on {grad.device}, parameter on {param.device}")
    real_dtype = param.real.dtype if param.is_complex() else param.dtype
    if real_dtype not in PARAM_DTYPES:
        raise RuntimeError(f"{where} has dtype {param.dtype}; TMSGD steps floating-point and "
                           f"complex parameters only")
