"""What the auxiliary-variable losses accept besides the model (docs/AUXVAR.md, "Input rules").

The bounds MSE <= L * J and PINN loss <= K * J are statements about finite numbers: NaN or inf
data, an empty data set (a mean over no points is NaN) or an infinite, NaN or non-positive
weight would give a bound that fails or is NaN. So every data tensor must be a non-empty
floating-point tensor of finite values, and every weight a finite positive number; anything else
is refused when the loss is built, naming the argument.
"""

from __future__ import annotations

import math
import numbers

import torch

from .network import Layer, UnsupportedModelError


def check_values(name: str, tensor: object) -> None:
    """Refuse a data tensor that is not floating point, holds no points or a non-finite value."""
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got "
                         f"{getattr(tensor, 'dtype', type(tensor).__name__)}")
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)}): the losses are means "
                         f"over points and need at least one")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} has {int((~torch.isfinite(tensor)).sum())} NaN or infinite "
                         f"values; the bound holds for finite data only")


def check_data(layers: list[Layer], inputs: torch.Tensor, targets: torch.Tensor,
               names: tuple[str, str] = ("inputs", "targets")) -> None:
    """Refuse points and values that are not finite, non-empty floating-point data of the shapes
    (N, d_in) and (N, d_out) the network needs."""
    for name, tensor in zip(names, (inputs, targets)):
        check_values(name, tensor)
    if inputs.dim() != 2 or inputs.shape[1] != layers[0].linear.in_features:
        raise UnsupportedModelError(
            f"{names[0]} must have shape (N, {layers[0].linear.in_features}), "
            f"got {tuple(inputs.shape)}")
    if (targets.dim() != 2 or targets.shape[0] != inputs.shape[0]
            or targets.shape[1] != layers[-1].linear.out_features):
        raise UnsupportedModelError(
            f"{names[1]} must have shape ({inputs.shape[0]}, {layers[-1].linear.out_features}), "
            f"got {tuple(targets.shape)}")


def check_positive(name: str, value: object) -> float:
    """A finite positive number (not a bool), as a float."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def check_weights(weights: object) -> str | float:
    """The penalty weights: "adaptive" (the bound holds) or a fixed finite positive number."""
    if isinstance(weights, str):
        if weights == "adaptive":
            return weights
        raise ValueError(f"weights must be 'adaptive' or a finite positive number, got "
                         f"{weights!r}")
    return check_positive("weights", weights)
