"""Auxiliary-variable loss of a PINN for a first-order linear PDE (docs/AUXVAR.md section 4).

Problem: ``c(x) . grad u(x) = f(x)`` at interior points, ``u = g`` at boundary points; the
original (PINN) loss is ``mean_int (c . grad phi - f)^2 + lambda * mean_bnd (phi - g)^2``.

The directional derivative of layer l, ``g_l = c . grad h_l``, obeys ``g_0 = c`` and
``g_l = s'(a_l) * (W_l g_{l-1})``, and ``c . grad phi = W_L g_{L-1}``. At interior points the loss
keeps value auxiliaries ``z_l`` (l <= L-2: the last hidden value is never used there) and
derivative auxiliaries ``v_l`` (l <= L-1) with residuals

    r_l = z_l - s(W_l z_{l-1} + b_l),   q_l = v_l - s'(W_l z_{l-1} + b_l) * (W_l v_{l-1}),
    rho = W_L v_{L-1} - f.

The value error e_l = h_l - z_l and derivative error d_l = g_l - v_l satisfy, for |s'| <= 1 and s'
K2-Lipschitz, |e_l| <= A_l |e_{l-1}| + |r_l| and |d_l| <= A_l |d_{l-1}| + B_l |e_{l-1}| + |q_l|,
with A_l = ||W_l|| and B_l = K2 ||diag(W_l v_{l-1}) W_l||_F (per point: the "diagonal weights
built from the derivative auxiliaries"). Unrolling from the output gives
|c . grad phi - f| <= |rho| + sum_l C^q_l |q_l| + sum_l C^r_l |r_l| with 2L - 2 terms, so
Cauchy-Schwarz gives PDE residual^2 <= (2L - 2) * (rho^2 + sum w^q_l q_l^2 + sum w^r_l r_l^2),
w = C^2. The boundary part is the FNN loss (constant L). Hence PINN loss <= max(2L-2, L) * J.
"""

from __future__ import annotations

import torch
from torch import nn

from .fnn import squared_error
from .inputs import check_data, check_positive, check_values, check_weights
from .network import (
    TANH_SECOND_DERIVATIVE_BOUND,
    UnsupportedModelError,
    layer_norms_squared,
    parse_mlp,
    tail_products,
)


def _derivative_rule(act: nn.Module | None) -> tuple[callable, float]:
    """(s', Lipschitz constant of s') for the activations the PINN bound covers."""
    # Exact types: a subclass may compute anything (a steeper tanh breaks |s'| <= 1), and a
    # declared Lipschitz constant of s says nothing about s'.
    if type(act) is nn.Tanh:
        return (lambda a: 1.0 - torch.tanh(a).square()), TANH_SECOND_DERIVATIVE_BOUND
    if type(act) is nn.Identity:
        return torch.ones_like, 0.0
    raise UnsupportedModelError(
        f"the PINN variant supports nn.Tanh (and nn.Identity) activations only, exactly those "
        f"types, got {type(act).__name__}: the derivative bound needs |s'| <= 1 and a "
        f"Lipschitz s'")


class FirstOrderPINNLoss(nn.Module):
    """J(theta, z, v) of a scalar MLP for ``c . grad u = f`` (interior) and ``u = g`` (boundary).

    interior (N, d) points, velocity (N, d) the field c at them, source (N, 1) f at them;
    boundary (M, d) points and boundary_values (M, 1) g at them (all non-empty, floating point,
    finite); boundary_weight lambda, a finite positive number.
    weights, norm, weight_grad: as in ``AuxVarLoss``. Auxiliaries (all parameters, initialized
    by a forward pass so that J equals the PINN loss at the start): ``z`` interior values,
    ``v`` interior directional derivatives, ``zb`` boundary values.
    """

    def __init__(self, model: nn.Module, interior: torch.Tensor, velocity: torch.Tensor,
                 source: torch.Tensor, boundary: torch.Tensor, boundary_values: torch.Tensor, *,
                 boundary_weight: float = 1.0, weights: str | float = "adaptive",
                 norm: str = "fro", weight_grad: bool = False) -> None:
        super().__init__()
        self.layers = parse_mlp(model)
        self.rules = [_derivative_rule(lay.activation) for lay in self.layers[:-1]]
        if self.layers[-1].linear.out_features != 1:
            raise UnsupportedModelError("the PDE is scalar: the model must have one output")
        check_data(self.layers, interior, source, ("interior", "source"))
        check_data(self.layers, boundary, boundary_values, ("boundary", "boundary_values"))
        check_values("velocity", velocity)
        if velocity.shape != interior.shape:
            raise UnsupportedModelError(
                f"velocity must have the interior's shape {tuple(interior.shape)}, got "
                f"{tuple(velocity.shape)}")
        weights = check_weights(weights)
        if norm not in ("fro", "spectral"):
            raise ValueError(f"norm must be 'fro' or 'spectral', got {norm!r}")
        self.model = model
        self.weights_mode, self.norm, self.weight_grad = weights, norm, weight_grad
        self.boundary_weight = check_positive("boundary_weight", boundary_weight)
        for name, t in (("interior", interior), ("velocity", velocity), ("source", source),
                        ("boundary", boundary), ("boundary_values", boundary_values)):
            self.register_buffer(name, t)
        hs, gs = self.forward_with_derivative(interior, velocity)
        depth = len(self.layers)
        self.z = nn.ParameterList([nn.Parameter(h) for h in hs[1:depth - 1]])
        self.v = nn.ParameterList([nn.Parameter(g) for g in gs[1:depth]])
        hb, _ = self.forward_with_derivative(boundary, torch.zeros_like(boundary))
        self.zb = nn.ParameterList([nn.Parameter(h) for h in hb[1:depth]])

    @property
    def depth(self) -> int:
        """L, the number of Linear layers."""
        return len(self.layers)

    @property
    def bound_constant(self) -> int:
        """K in PINN loss <= K * J: max(2L - 2, L) (1 for L = 1)."""
        return max(2 * self.depth - 2, self.depth)

    @torch.no_grad()
    def forward_with_derivative(self, x: torch.Tensor, c: torch.Tensor
                                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Values ``[h_0..h_{L-1}, phi]`` and directional derivatives ``[g_0..g_{L-1}, c.grad
        phi]`` of the network at ``x`` along ``c`` (forward mode, detached)."""
        hs, gs = [x], [c]
        for lay, rule in zip(self.layers[:-1], self.rules):
            a = lay.linear(hs[-1])
            gs.append(rule[0](a) * (gs[-1] @ lay.linear.weight.T))
            hs.append(lay.activation(a))
        hs.append(self.layers[-1].linear(hs[-1]))
        gs.append(gs[-1] @ self.layers[-1].linear.weight.T)
        return [h.clone() for h in hs], [g.clone() for g in gs]

    @torch.no_grad()
    def reset_aux(self) -> None:
        """Set every auxiliary to the forward pass, which makes J equal the PINN loss."""
        hs, gs = self.forward_with_derivative(self.interior, self.velocity)
        for p, h in zip([*self.z, *self.v], [*hs[1:self.depth - 1], *gs[1:self.depth]]):
            p.copy_(h)
        hb, _ = self.forward_with_derivative(self.boundary, torch.zeros_like(self.boundary))
        for p, h in zip(self.zb, hb[1:self.depth]):
            p.copy_(h)

    def theta_parameters(self) -> list[nn.Parameter]:
        """The network's parameters."""
        return list(self.model.parameters())

    def aux_parameters(self) -> list[nn.Parameter]:
        """All auxiliaries (interior values and derivatives, boundary values)."""
        return [*self.z, *self.v, *self.zb]

    def interior_residuals(self) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor,
                                          list[torch.Tensor]]:
        """``(r, q, rho, wv)``: value residuals r_1..r_{L-2}, derivative residuals q_1..q_{L-1},
        the PDE residual rho = W_L v_{L-1} - f, and the products W_l v_{l-1} (l = 1..L-1)."""
        zs = [self.interior, *self.z]
        vs = [self.velocity, *self.v]
        r, q, wv = [], [], []
        for i, (lay, rule) in enumerate(zip(self.layers[:-1], self.rules)):
            a = lay.linear(zs[i])
            w_v = vs[i] @ lay.linear.weight.T
            wv.append(w_v)
            q.append(vs[i + 1] - rule[0](a) * w_v)
            if i + 1 < len(zs):
                r.append(zs[i + 1] - lay.activation(a))
        rho = vs[-1] @ self.layers[-1].linear.weight.T - self.source
        return r, q, rho, wv

    def _weights(self, wv: list[torch.Tensor], weights: str | float
                 ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(boundary omegas (L-1), derivative weights w^q (L-1), per-point value weights w^r
        (L-2 tensors of shape (N,)))."""
        L, dt, dev = self.depth, self.interior.dtype, self.interior.device
        if weights != "adaptive":
            mu = float(weights)
            n = self.interior.shape[0]
            return (torch.full((L - 1,), mu, dtype=dt, device=dev),
                    torch.full((L - 1,), mu, dtype=dt, device=dev),
                    [torch.full((n,), mu, dtype=dt, device=dev) for _ in range(L - 2)])
        with torch.set_grad_enabled(self.weight_grad and torch.is_grad_enabled()):
            sq = layer_norms_squared(self.layers, self.norm)
            alpha = sq.sqrt()
            omega_b = tail_products(sq)
            c_e = torch.zeros_like(self.source[:, 0])
            c_d = alpha[-1]
            w_q, w_r = [], []
            for idx in range(L - 2, -1, -1):           # layer l = idx + 1, from L-1 down to 1
                w_q.append(c_d.square())
                if idx < L - 2:
                    w_r.append(c_e.square())
                lay, (_, k2) = self.layers[idx], self.rules[idx]
                row_sq = lay.linear.weight.square().sum(dim=1)
                beta = k2 * (wv[idx].square() @ row_sq).sqrt()
                c_e, c_d = c_e * alpha[idx] + c_d * beta, c_d * alpha[idx]
            # depth 1 has no hidden layer and so no weights at all
            w_q = torch.stack(w_q[::-1]) if w_q else alpha[:0]
            w_r = w_r[::-1]
        if not self.weight_grad:
            omega_b, w_q, w_r = omega_b.detach(), w_q.detach(), [w.detach() for w in w_r]
        return omega_b, w_q, w_r

    def forward(self, weights: str | float | None = None) -> torch.Tensor:
        """J = J_interior + lambda * J_boundary with this object's weights (or ``weights``)."""
        weights = self.weights_mode if weights is None else check_weights(weights)
        r, q, rho, wv = self.interior_residuals()
        omega_b, w_q, w_r = self._weights(wv, weights)
        j_int = rho.square().sum(dim=1)
        for w, res in zip(w_q, q):
            j_int = j_int + w * res.square().sum(dim=1)
        for w, res in zip(w_r, r):
            j_int = j_int + w * res.square().sum(dim=1)
        zb = [self.boundary, *self.zb]
        j_bnd = (self.layers[-1].linear(zb[-1]) - self.boundary_values).square().sum(dim=1).mean()
        for om, lay, z_prev, z in zip(omega_b, self.layers[:-1], zb[:-1], zb[1:]):
            j_bnd = j_bnd + om * (z - lay.activation(lay.linear(z_prev))).square().sum(dim=1).mean()
        return j_int.mean() + self.boundary_weight * j_bnd

    def pde_operator(self, x: torch.Tensor, c: torch.Tensor,
                     create_graph: bool = False) -> torch.Tensor:
        """``c . grad phi`` at ``x`` by autograd, shape (N, 1)."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            phi = self.model(x)
            (grad,) = torch.autograd.grad(phi.sum(), x, create_graph=create_graph)
        return (grad * c).sum(dim=1, keepdim=True)

    def pinn_loss(self, create_graph: bool = True) -> torch.Tensor:
        """The original PINN loss, derivatives by autograd (differentiable when create_graph)."""
        res = self.pde_operator(self.interior, self.velocity, create_graph) - self.source
        value = (res.square().sum(dim=1).mean()
                 + self.boundary_weight * squared_error(self.model(self.boundary),
                                                        self.boundary_values))
        # without the graph the value is only a number: do not hand out a half-built graph
        return value if create_graph else value.detach()

    @torch.no_grad()
    def bound(self) -> tuple[float, float]:
        """``(pinn_loss, K * J_adaptive)`` at the current parameters and auxiliaries."""
        return (float(self.pinn_loss(create_graph=False)),
                float(self.bound_constant * self.forward("adaptive")))
