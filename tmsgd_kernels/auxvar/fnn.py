"""The auxiliary-variable loss J(theta, z) of a fully connected network (docs/AUXVAR.md).

    J(theta, z) = mean_n [ |W_L z_{L-1} + b_L - y|^2
                           + sum_{l<L} omega_l |z_l - s_l(W_l z_{l-1} + b_l)|^2 ]

with z_0 = x and one auxiliary z_l per training point and hidden layer. With the self-adaptive
weights omega_l = prod_{j>l} ||W_j||^2 (Frobenius or spectral), MSE(theta) <= L * J(theta, z) for
every z, and J(theta, h(theta)) = MSE(theta) at the forward pass h(theta).
"""

from __future__ import annotations

import torch
from torch import nn

from .inputs import check_data, check_weights
from .network import layer_norms_squared, parse_mlp, tail_products


def squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_n |pred_n - target_n|^2`` with the squared Euclidean norm over the output."""
    return (pred - target).square().sum(dim=1).mean()


class AuxVarLoss(nn.Module):
    """J(theta, z) for an MLP on fixed training data, owning the auxiliary variables z.

    ``model`` is an ``nn.Sequential`` of Linear layers and 1-Lipschitz activations (see
    ``parse_mlp``); ``inputs`` (N, d_in) and ``targets`` (N, d_out) are the whole training set
    (the method is full-batch least squares): non-empty, floating point and finite (see
    inputs.py). ``self.parameters()`` yields the model's parameters and the auxiliaries
    ``z_1..z_{L-1}`` (each (N, width_l), initialized by a forward pass, so J equals the MSE at
    the start), so any torch optimizer, TMSGD included, can step them all.

    weights: ``"adaptive"`` (omega_l = prod_{j>l} ||W_j||^2, the bound holds) or a finite
        positive number mu (fixed penalty omega_l = mu, no bound).
    norm: ``"fro"`` or ``"spectral"`` for the adaptive weights (spectral gives smaller weights,
        the bound still holds; it costs an SVD per layer and step).
    weight_grad: let the gradient flow through omega (True) or hold omega fixed within a step
        (False: omega is recomputed from the current weights at every call, but detached).
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
                 weights: str | float = "adaptive", norm: str = "fro",
                 weight_grad: bool = False) -> None:
        super().__init__()
        self.layers = parse_mlp(model)
        check_data(self.layers, inputs, targets)
        weights = check_weights(weights)
        if norm not in ("fro", "spectral"):
            raise ValueError(f"norm must be 'fro' or 'spectral', got {norm!r}")
        self.model = model
        self.weights_mode = weights
        self.norm = norm
        self.weight_grad = weight_grad
        self.register_buffer("inputs", inputs)
        self.register_buffer("targets", targets)
        self.aux = nn.ParameterList(
            [nn.Parameter(h) for h in self.forward_pass(inputs)[1:-1]])

    @property
    def depth(self) -> int:
        """L, the number of Linear layers."""
        return len(self.layers)

    @property
    def bound_constant(self) -> int:
        """K in MSE <= K * J for the adaptive weights: the depth L (Cauchy-Schwarz on L terms)."""
        return self.depth

    @torch.no_grad()
    def forward_pass(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[h_0, h_1, ..., h_{L-1}, phi]`` of the network at ``x``, detached."""
        hs = [x]
        for lay in self.layers:
            a = lay.linear(hs[-1])
            hs.append(a if lay.activation is None else lay.activation(a))
        return [h.clone() for h in hs]

    @torch.no_grad()
    def reset_aux(self) -> None:
        """Set every z_l to the forward pass h_l(theta), which makes J equal the MSE."""
        for z, h in zip(self.aux, self.forward_pass(self.inputs)[1:-1]):
            z.copy_(h)

    def theta_parameters(self) -> list[nn.Parameter]:
        """The network's parameters (without the auxiliaries)."""
        return list(self.model.parameters())

    def aux_parameters(self) -> list[nn.Parameter]:
        """The auxiliary variables z_1..z_{L-1}."""
        return list(self.aux)

    def omegas(self, weights: str | float | None = None) -> torch.Tensor:
        """The penalty weights omega_1..omega_{L-1} (length L-1) for this object's settings."""
        weights = self.weights_mode if weights is None else check_weights(weights)
        if weights != "adaptive":
            return torch.full((self.depth - 1,), float(weights),
                              dtype=self.inputs.dtype, device=self.inputs.device)
        with torch.set_grad_enabled(self.weight_grad and torch.is_grad_enabled()):
            om = tail_products(layer_norms_squared(self.layers, self.norm))
        return om if self.weight_grad else om.detach()

    def residuals(self) -> list[torch.Tensor]:
        """``[r_1, ..., r_{L-1}, r_L]``: ``r_l = z_l - s_l(W_l z_{l-1} + b_l)`` per point, and the
        output residual ``r_L = W_L z_{L-1} + b_L - y``."""
        zs = [self.inputs, *self.aux]
        out = []
        for lay, z_prev, z in zip(self.layers[:-1], zs[:-1], zs[1:]):
            out.append(z - lay.activation(lay.linear(z_prev)))
        out.append(self.layers[-1].linear(zs[-1]) - self.targets)
        return out

    def layer_terms(self) -> torch.Tensor:
        """``mean_n |r_l|^2`` for l = 1..L (unweighted), a tensor of length L."""
        return torch.stack([r.square().sum(dim=1).mean() for r in self.residuals()])

    def forward(self, weights: str | float | None = None) -> torch.Tensor:
        """J(theta, z) with this object's weights, or with ``weights`` given here (e.g. the
        adaptive J of a fixed-penalty run, to evaluate the bound)."""
        terms = self.layer_terms()
        return terms[-1] + (self.omegas(weights) * terms[:-1]).sum()

    def mse(self) -> torch.Tensor:
        """The true training MSE of the network (no auxiliaries involved)."""
        return squared_error(self.model(self.inputs), self.targets)

    @torch.no_grad()
    def bound(self) -> tuple[float, float]:
        """``(mse, L * J_adaptive)``: the MSE and its upper bound at the current (theta, z).

        The bound uses the adaptive weights of this object's norm whatever the training weights,
        since it holds for every z.
        """
        return float(self.mse()), float(self.bound_constant * self.forward("adaptive"))
