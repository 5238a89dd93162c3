"""The problems: regression of a multiscale 1-D target with tanh MLPs of depth 4, 8, 12, and a
PINN for the transport equation u_t + a u_x = f on the unit square with a known solution."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from tmsgd_kernels.auxvar import AuxVarLoss, FirstOrderPINNLoss

DTYPE = torch.float64      # the bound is checked at every evaluation; fp64 keeps rounding out
WIDTH = 50                 # regression width (the omega_1 ~ 7e6 example: width 50, L = 8)
PINN_WIDTH = 30
N_TRAIN = 256
TRANSPORT_SPEED = 0.5


@dataclass(frozen=True)
class TaskInfo:
    """A task's name, kind ("regression" or "pinn"), depth L and what its loss is called."""

    name: str
    kind: str
    depth: int
    loss_name: str


TASKS = {
    "reg4": TaskInfo("reg4", "regression", 4, "train MSE"),
    "reg8": TaskInfo("reg8", "regression", 8, "train MSE"),
    "reg12": TaskInfo("reg12", "regression", 12, "train MSE"),
    "pinn4": TaskInfo("pinn4", "pinn", 4, "PINN loss"),
}


def tanh_mlp(d_in: int, width: int, depth: int) -> nn.Sequential:
    """``depth`` Linear layers, Tanh between them, one output; PyTorch's default init.

    Created in float64 directly, so the initial weights of a seed do not depend on torch's
    default dtype (drawing in float32 and converting would give another network).
    """
    dims = [d_in] + [width] * (depth - 1)
    mods: list[nn.Module] = []
    for a, b in zip(dims, dims[1:]):
        mods += [nn.Linear(a, b, dtype=DTYPE), nn.Tanh()]
    mods.append(nn.Linear(dims[-1], 1, dtype=DTYPE))
    return nn.Sequential(*mods)


def multiscale_target(x: torch.Tensor) -> torch.Tensor:
    """Three scales: periods 1, 1/4 and 1/12 on [-1, 1]."""
    return (torch.sin(2 * math.pi * x) + 0.4 * torch.sin(8 * math.pi * x)
            + 0.2 * torch.sin(24 * math.pi * x))


def exact_transport(p: torch.Tensor) -> torch.Tensor:
    """u*(x, t) = sin(2 pi (x - a t)) + x t / 2; p has columns (x, t)."""
    x, t = p[:, :1], p[:, 1:]
    return torch.sin(2 * math.pi * (x - TRANSPORT_SPEED * t)) + 0.5 * x * t


def transport_source(p: torch.Tensor) -> torch.Tensor:
    """f = u*_t + a u*_x: the travelling wave cancels, the x t / 2 term leaves x/2 + a t/2."""
    return 0.5 * p[:, :1] + 0.5 * TRANSPORT_SPEED * p[:, 1:]


def pinn_points(n_interior: int = 400, n_side: int = 40) -> dict[str, torch.Tensor]:
    """Fixed interior points (seeded) and the inflow boundary (t = 0 and x = 0, as a > 0)."""
    g = torch.Generator().manual_seed(1234)
    interior = torch.rand(n_interior, 2, generator=g, dtype=DTYPE)
    s = (torch.arange(n_side, dtype=DTYPE) + 0.5) / n_side
    z = torch.zeros_like(s)
    boundary = torch.cat([torch.stack([s, z], 1), torch.stack([z, s], 1)])
    return {"interior": interior,
            "velocity": torch.tensor([TRANSPORT_SPEED, 1.0], dtype=DTYPE).expand(n_interior, 2)
            .clone(),
            "source": transport_source(interior), "boundary": boundary,
            "boundary_values": exact_transport(boundary)}


def build_loss(task: str, seed: int, weights: str | float = "adaptive", norm: str = "fro",
               weight_grad: bool = False) -> AuxVarLoss | FirstOrderPINNLoss:
    """The task's auxiliary-variable loss around a freshly initialized network (seeded)."""
    info = TASKS[task]
    torch.manual_seed(seed)
    if info.kind == "regression":
        model = tanh_mlp(1, WIDTH, info.depth)
        x = torch.linspace(-1, 1, N_TRAIN, dtype=DTYPE).unsqueeze(1)
        return AuxVarLoss(model, x, multiscale_target(x), weights=weights, norm=norm,
                          weight_grad=weight_grad)
    model = tanh_mlp(2, PINN_WIDTH, info.depth)
    return FirstOrderPINNLoss(model, **pinn_points(), weights=weights, norm=norm,
                              weight_grad=weight_grad)


@torch.no_grad()
def test_error(loss: AuxVarLoss | FirstOrderPINNLoss) -> float:
    """Regression: MSE on 2048 fresh grid points. PINN: relative L2 error against u* on a
    64 x 64 grid."""
    if isinstance(loss, AuxVarLoss):
        x = torch.linspace(-1, 1, 2048, dtype=DTYPE).unsqueeze(1)
        return float((loss.model(x) - multiscale_target(x)).square().mean())
    s = (torch.arange(64, dtype=DTYPE) + 0.5) / 64
    p = torch.cartesian_prod(s, s)
    u = exact_transport(p)
    return float((loss.model(p) - u).norm() / u.norm())
