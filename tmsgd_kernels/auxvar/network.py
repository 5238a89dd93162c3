"""Reading an MLP as a list of layers ``h_l = sigma_l(W_l h_{l-1} + b_l)`` and refusing the rest.

The auxiliary-variable bound (docs/AUXVAR.md section 3) holds only for networks whose activations
are 1-Lipschitz, so the set of accepted activations is an explicit allow-list of exact types, and
any other module must declare its constant (``lipschitz_constant``): an unknown module is refused
rather than guessed about.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class UnsupportedModelError(ValueError):
    """The model is not an MLP of Linear layers and 1-Lipschitz activations."""


# Activations with Lipschitz constant <= 1 whatever their settings, by exact type: a subclass
# may compute anything (a 3 * tanh subclassing nn.Tanh is 3-Lipschitz). LeakyReLU and ELU are
# checked in lipschitz_constant.
_ONE_LIPSCHITZ = frozenset({nn.Tanh, nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Softsign, nn.Tanhshrink,
                            nn.Hardtanh, nn.Identity, nn.Softplus})

# The attribute through which any other activation module declares its Lipschitz constant.
DECLARED = "lipschitz_constant"

# sup |tanh''|, attained where tanh = 1/sqrt(3): the Lipschitz constant of tanh' (PINN bound).
TANH_SECOND_DERIVATIVE_BOUND = 4.0 / (3.0 * math.sqrt(3.0))


def lipschitz_constant(act: nn.Module) -> float:
    """The Lipschitz constant of an activation: the one it declares as ``lipschitz_constant``
    (a finite number >= 0, taken at its word), else that of its exact type on the allow-list;
    raises for anything else."""
    declared = getattr(act, DECLARED, None)
    if declared is not None:
        if (isinstance(declared, bool) or not isinstance(declared, numbers.Real)
                or not math.isfinite(declared) or declared < 0):
            raise UnsupportedModelError(
                f"activation {type(act).__name__} declares {DECLARED} = {declared!r}; it must "
                "be a finite number >= 0")
        return float(declared)
    kind = type(act)
    if kind is nn.LeakyReLU:
        return max(1.0, abs(act.negative_slope))
    if kind is nn.ELU:
        return max(1.0, abs(act.alpha))
    if kind in _ONE_LIPSCHITZ:
        return 1.0
    raise UnsupportedModelError(
        f"activation {kind.__name__} is not supported: the bound needs a 1-Lipschitz "
        "activation, one of exactly nn.Tanh, ReLU, ReLU6, Sigmoid, Softsign, Tanhshrink, "
        "Hardtanh, Identity, LeakyReLU with |slope| <= 1, ELU with alpha <= 1, Softplus (GELU "
        f"and SiLU have slopes above 1; subclasses are not trusted), or a module declaring "
        f"its Lipschitz constant <= 1 as `{DECLARED}`")


@dataclass(frozen=True)
class Layer:
    """One layer: its Linear map and the activation after it (None for the output layer)."""

    linear: nn.Linear
    activation: Callable[[torch.Tensor], torch.Tensor] | None


def parse_mlp(model: nn.Module) -> list[Layer]:
    """Split ``model`` into layers ``Linear [activation]``, the last a bare Linear.

    Accepts ``nn.Sequential`` of ``nn.Linear`` modules, each but the last followed by at most one
    1-Lipschitz activation (``lipschitz_constant``; a Linear followed directly by a Linear has the
    identity activation).
    Raises ``UnsupportedModelError`` for anything else, saying why.
    """
    if not isinstance(model, nn.Sequential):
        raise UnsupportedModelError(
            "expected an nn.Sequential of Linear layers and activations, got "
            f"{type(model).__name__}")
    mods = list(model)
    if not mods:
        raise UnsupportedModelError("the model is an empty nn.Sequential")
    layers: list[Layer] = []
    i = 0
    while i < len(mods):
        lin = mods[i]
        if not isinstance(lin, nn.Linear):
            raise UnsupportedModelError(
                f"module {i} ({type(lin).__name__}) is not nn.Linear: expected Linear layers, "
                "each followed by at most one activation")
        act = None
        if i + 1 < len(mods) and not isinstance(mods[i + 1], nn.Linear):
            act = mods[i + 1]
            constant = lipschitz_constant(act)
            if constant > 1.0:
                raise UnsupportedModelError(
                    f"activation {act!r} at module {i + 1} has Lipschitz constant "
                    f"{constant} > 1")
            i += 1
        elif i + 1 < len(mods):
            act = nn.Identity()
        layers.append(Layer(lin, act))
        i += 1
    if layers[-1].activation is not None:
        raise UnsupportedModelError(
            "the last module must be nn.Linear: the output layer phi = W_L h_{L-1} + b_L has no "
            "activation")
    for a, b in zip(layers, layers[1:]):
        if a.linear.out_features != b.linear.in_features:
            raise UnsupportedModelError(
                f"layer widths do not chain: {a.linear.out_features} -> {b.linear.in_features}")
    return layers


def layer_norms_squared(layers: list[Layer], norm: str) -> torch.Tensor:
    """``||W_l||^2`` for every layer (Frobenius or spectral), a tensor of length L."""
    if norm == "fro":
        return torch.stack([lay.linear.weight.square().sum() for lay in layers])
    if norm == "spectral":
        return torch.stack([torch.linalg.matrix_norm(lay.linear.weight, ord=2).square()
                            for lay in layers])
    raise ValueError(f"norm must be 'fro' or 'spectral', got {norm!r}")


def tail_products(sq_norms: torch.Tensor) -> torch.Tensor:
    """``omega_l = prod_{j=l+1}^{L} sq_norms_j`` for l = 1..L-1 (index l-1), length L-1.

    Written as a reversed cumulative product so that the gradient, when wanted, flows through
    every factor.
    """
    rev = torch.flip(sq_norms[1:], dims=[0])
    return torch.flip(torch.cumprod(rev, dim=0), dims=[0])
