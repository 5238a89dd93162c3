"""The methods compared: a loss (the original one, the adaptive J, a fixed-penalty J) with an
optimizer (GD, Adam, TM-SGD), and the ablations of the adaptive J with Adam."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tmsgd_kernels import TMSGD


@dataclass(frozen=True)
class Method:
    """How one run trains: which loss and weights, which optimizer, and the J options."""

    name: str
    loss: str                       # "original" or "aux"
    optimizer: str                  # "gd", "adam", "tmsgd"
    weights: str | float = "adaptive"
    norm: str = "fro"
    weight_grad: bool = False
    alternating: bool = False       # odd steps move z only, even steps theta only


OPTIMIZERS = ("gd", "adam", "tmsgd")


def main_methods(mus: tuple[float, ...]) -> list[Method]:
    """Original loss and adaptive J with every optimizer; fixed penalties with Adam and TM-SGD
    (GD left out of the fixed-penalty grid to fit the time budget; TM-SGD stands for the GD
    family there)."""
    out = [Method(f"mse-{o}", "original", o) for o in OPTIMIZERS]
    out += [Method(f"adaptive-{o}", "aux", o) for o in OPTIMIZERS]
    out += [Method(f"fixed{mu:g}-{o}", "aux", o, weights=float(mu))
            for mu in mus for o in ("adam", "tmsgd")]
    return out


# The open questions of the issue, each a single change to adaptive J + Adam, run at
# adaptive-adam's selected learning rate (not re-tuned).
ABLATIONS = (
    Method("adaptive-adam-wgrad", "aux", "adam", weight_grad=True),
    Method("adaptive-adam-spectral", "aux", "adam", norm="spectral"),
    Method("adaptive-adam-alt", "aux", "adam", alternating=True),
)

ALL_METHODS = {m.name: m for m in main_methods((1.0, 10.0, 100.0)) + list(ABLATIONS)}


def method_by_name(name: str) -> Method:
    """Look a method up by name (fixed penalties with any mu are parsed from the name)."""
    if name in ALL_METHODS:
        return ALL_METHODS[name]
    if name.startswith("fixed"):
        mu, opt = name[len("fixed"):].split("-")
        return Method(name, "aux", opt, weights=float(mu))
    raise KeyError(name)


def make_optimizer(name: str, params: list[torch.nn.Parameter], lr: float
                   ) -> torch.optim.Optimizer:
    """Plain full-batch GD, Adam with default betas, TM-SGD with the paper's coefficients."""
    if name == "gd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "tmsgd":
        return TMSGD(params, lr=lr, backend="torch")
    raise ValueError(f"unknown optimizer {name!r}")
