"""The five optimizers compared, built by name, and the learning-rate grids they are tuned on."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from tmsgd_kernels import TMSGD

OPTIMIZERS: tuple[str, ...] = ("sgd", "tmsgd", "sgdm", "tmsgdm", "adam")
LABELS: dict[str, str] = {
    "sgd": "SGD",
    "tmsgd": "TM-SGD",
    "sgdm": "SGD-M (0.9)",
    "tmsgdm": "TM-SGD-M (0.9)",
    "adam": "Adam",
}
MOMENTUM = 0.9

# One grid for the SGD family (all four share it), one for Adam.
SGD_GRID_FULL: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
ADAM_GRID_FULL: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
SGD_GRID_QUICK: tuple[float, ...] = (0.01, 0.1, 1.0)
ADAM_GRID_QUICK: tuple[float, ...] = (1e-3, 1e-2)


def lr_grid(name: str, quick: bool) -> tuple[float, ...]:
    """The learning rates tried for optimizer ``name``."""
    if name == "adam":
        return ADAM_GRID_QUICK if quick else ADAM_GRID_FULL
    return SGD_GRID_QUICK if quick else SGD_GRID_FULL


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    lr: float,
    switch_step: int = 0,
    adam_betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` at learning rate ``lr`` (``switch_step`` applies to TM-SGD only;
    ``adam_betas`` to Adam only: the GAN task uses the GAN convention (0.5, 0.999))."""
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "sgdm":
        return torch.optim.SGD(params, lr=lr, momentum=MOMENTUM)
    if name == "tmsgd":
        return TMSGD(params, lr=lr, switch_step=switch_step)
    if name == "tmsgdm":
        return TMSGD(params, lr=lr, momentum=MOMENTUM, switch_step=switch_step)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=adam_betas)
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")
