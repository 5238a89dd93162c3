"""The block-coordinate solver of bcd.py for the PINN's auxiliary-variable loss J(theta, z, v, zb)
(``FirstOrderPINNLoss``, docs/AUXVAR.md section 4; issue 25 item 3).

J_omega = mean_int [ rho^2 + sum_{l<L} w^q_l |q_l|^2 + sum_{l<L-1} w^r_l(n) |r_l|^2 ]
          + lambda mean_bnd [ |W_L zb_{L-1} + b_L - g|^2
                              + sum_{l<L} omega_l |zb_l - s(W_l zb_{l-1} + b_l)|^2 ]

with rho = W_L v_{L-1} - f (no bias: the derivative removes it), r_l = z_l - s(a_l),
q_l = v_l - s'(a_l) * (W_l v_{l-1}), a_l = W_l z_{l-1} + b_l (z_0 = x, v_0 = c(x), zb_0 = the
boundary points).
The weights omega = (omega_l, w^q_l, w^r_l(n)) are computed by the loss's own rule once at the
start of a sweep and held fixed through it, so the sweep descends one fixed function J_omega.
That matters more here than for the MLP: the per-point w^r depend on the auxiliaries v_l
(l <= L-2), not only on the weights. One sweep visits the blocks from the output down:

1. (W_L, b_L), exactly. They enter J_omega only through rho (W_L alone) and the boundary output
   term (W_L and b_L), both linear in them given the last derivative auxiliaries v_{L-1} and the
   last boundary values zb_{L-1}: one linear least-squares problem over the interior rows
   [v_{L-1}, 0] -> f and the boundary rows [zb_{L-1}, 1] -> g, weighted 1/N and lambda/M. As in
   bcd.py it is solved as the proximal problem (+ rho |(W, b) - (W, b)_old|^2, normal equations,
   Cholesky: bcd.proximal_lstsq on the rows scaled so that its row mean is that weighting).
2. v_{L-1}, exactly. It enters rho and w^q_{L-1} |q_{L-1}|^2, and q_{L-1} = v_{L-1} - t with t
   independent of v_{L-1} (the value path never sees it, and no weight is built from it): per
   point min |v W_L^T - f|^2 + w^q_{L-1} |v - t|^2, solved in the dual form
   v = t + r (W_L W_L^T + w I)^{-1} W_L, r = f - t W_L^T (a 1 x 1 system). The interior has no
   last value auxiliary: the PDE residual never uses h_{L-1}.
3. zb_{L-1}, exactly: bcd.py's last-auxiliary block on the boundary points (lambda multiplies both
   of its terms and cancels). Both dual systems are 1 x 1: W_L W_L^T + w = 2 |W_L|^2, since with
   Frobenius weights w^q_{L-1} = omega_{L-1} = |W_L|^2 (the primal width x width systems would
   have condition number 2).
4. For l = L-1 .. 1: (W_l, b_l), then (l >= 2) z_{l-1}, v_{l-1}, zb_{l-1}, each by one gradient
   step on its terms of J_omega with bcd.py's backtracking (step eta / (2 c / N), eta adapted per
   block, Armijo's rule c = 1e-4, the block left unchanged after 30 halvings). These blocks are
   not solved exactly: W_l, b_l, z_{l-1} and zb_{l-1} enter through the activation s (and
   through s' in q_l). v_{l-1} does enter quadratically, but its second term couples each point
   through diag(s'(a_l(n))) W_l, a width x width system per point (N factorizations per layer
   and sweep), so it gets the same gradient step as the others. The scale c, which divides the
   omega scale out of the step, is the sum of the block's term weights, with |W_l|_F^2 for the
   terms it enters through W_l and per-point weights averaged: W_l: w^q_l + mean w^r_l +
   lambda omega_l; z_{l-1}: mean w^r_{l-1} + (w^q_l + mean w^r_l) |W_l|^2; v_{l-1}: w^q_{l-1} +
   w^q_l |W_l|^2; zb_{l-1}: lambda (omega_{l-1} + omega_l |W_l|^2), per boundary point (M). c is a
   scale, not a curvature bound: the backtracking sets the step.

Every block update leaves J_omega no larger (exact minimisers, Armijo steps, or no change), so
J_omega decreases monotonically through a sweep; the weights' update at the next sweep may raise
J (PINN loss <= max(2L - 2, L) J holds for every point whatever happens).

FLOPs are counted as in bcd.py: 2 m k n per matrix product as torch.utils.flop_counter counts
them (forward, backward and backtracking evaluations, elementwise work not counted), plus what
that counter does not see: n^3 / 3 per Cholesky factorization, 2 n^2 per right-hand side of its
triangular solves, and 2 N k for each matrix-vector product of the weight rule (one per hidden
layer). Only Frobenius weights are accepted: spectral ones would add SVDs to every sweep that
this count leaves out.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tmsgd_kernels.auxvar import FirstOrderPINNLoss

from .bcd import BacktrackingBlocks, proximal_lstsq


class PINNBlockCoordinateSolver(BacktrackingBlocks):
    """Sweeps of the block-coordinate method on a ``FirstOrderPINNLoss`` with adaptive Frobenius
    weights (its parameters are changed in place). ``flops`` accumulates the work of the sweeps;
    ``flops_linalg`` is the part of it that torch.utils.flop_counter does not see."""

    def __init__(self, loss: FirstOrderPINNLoss, rho: float, eta: float = 1.0) -> None:
        if loss.weights_mode != "adaptive" or loss.weight_grad:
            raise ValueError("the block-coordinate solver needs adaptive weights held fixed "
                             "within a sweep (weights='adaptive', weight_grad=False)")
        if loss.norm != "fro":
            raise ValueError("the block-coordinate solver takes Frobenius weights only (norm="
                             "'fro'): its FLOP count does not cover the SVDs of spectral ones")
        if loss.depth < 2:
            raise ValueError("a one-layer network has no auxiliaries: it is least squares")
        if not rho > 0:
            raise ValueError(f"rho must be positive, got {rho}")
        super().__init__(eta)  # gradient blocks keyed (kind, l), kind in w, z, v, zb
        self.loss, self.rho = loss, rho
        self.lam = loss.boundary_weight
        self.n, self.m = loss.interior.shape[0], loss.boundary.shape[0]
        for p in loss.parameters():  # gradients are taken block by block, only where needed
            p.requires_grad_(False)
        self.refresh_weights()
        self.flops = self.flops_linalg = 0.0  # the count covers the sweeps

    # -- the variables and the weights ---------------------------------------------------------
    def _z(self, k: int) -> torch.Tensor | None:
        """Interior value auxiliary z_k (z_0 = the points; None for k = L-1, which J lacks)."""
        if k == 0:
            return self.loss.interior
        return self.loss.z[k - 1] if k <= self.loss.depth - 2 else None

    def _v(self, k: int) -> torch.Tensor:
        """Interior derivative auxiliary v_k (v_0 = the velocity c(x))."""
        return self.loss.velocity if k == 0 else self.loss.v[k - 1]

    def _zb(self, k: int) -> torch.Tensor:
        """Boundary value auxiliary zb_k (zb_0 = the boundary points)."""
        return self.loss.boundary if k == 0 else self.loss.zb[k - 1]

    def _mm(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
            ) -> torch.Tensor:
        """x W^T (+ b), counted."""
        self.flops += 2.0 * x.shape[0] * w.shape[0] * w.shape[1]
        out = x @ w.mT
        return out if b is None else out + b

    @torch.no_grad()
    def refresh_weights(self) -> None:
        """omega_l (boundary), w^q_l and the per-point w^r_l from the current point, by the
        loss's own rule; held fixed until the next call (the start of the next sweep)."""
        layers = self.loss.layers
        wv = [self._mm(self._v(k - 1), layers[k - 1].linear.weight)
              for k in range(1, self.loss.depth)]
        self.omega_b, self.w_q, self.w_r = self.loss._weights(wv, "adaptive")
        for prod in wv:  # the rule's |W_l v|^2 . (W_l's squared row norms): one mv per layer
            self._linalg(2.0 * prod.shape[0] * prod.shape[1])

    # -- the terms of J_omega ------------------------------------------------------------------
    def _interior(self, k: int, z_prev: torch.Tensor, v_prev: torch.Tensor | None,
                  w: torch.Tensor, b: torch.Tensor, z: torch.Tensor | None, v: torch.Tensor,
                  wv: torch.Tensor | None = None) -> torch.Tensor:
        """w^q_k mean |q_k|^2 + mean w^r_k |r_k|^2 (the second for k <= L-2) of hidden layer k;
        ``wv`` = v_{k-1} W_k^T when already known (then ``v_prev`` is not read)."""
        act, ds = self.loss.layers[k - 1].activation, self.loss.rules[k - 1][0]
        a = self._mm(z_prev, w, b)
        if wv is None:
            wv = self._mm(v_prev, w)
        out = self.w_q[k - 1] * (v - ds(a) * wv).square().sum(1).mean()
        if z is not None:
            out = out + (self.w_r[k - 1] * (z - act(a)).square().sum(1)).mean()
        return out

    def _boundary(self, k: int, zb_prev: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                  zb: torch.Tensor) -> torch.Tensor:
        """lambda omega_k mean_bnd |zb_k - s(zb_{k-1} W_k^T + b_k)|^2 of hidden layer k."""
        act = self.loss.layers[k - 1].activation
        res = zb - act(self._mm(zb_prev, w, b))
        return self.lam * self.omega_b[k - 1] * res.square().sum(1).mean()

    def _output(self) -> torch.Tensor:
        """mean_int |W_L v_{L-1} - f|^2 + lambda mean_bnd |W_L zb_{L-1} + b_L - g|^2."""
        L, out = self.loss.depth, self.loss.layers[-1].linear
        pde = (self._mm(self._v(L - 1), out.weight) - self.loss.source).square().sum(1).mean()
        bnd = self._mm(self._zb(L - 1), out.weight, out.bias) - self.loss.boundary_values
        return pde + self.lam * bnd.square().sum(1).mean()

    @torch.no_grad()
    def objective(self) -> float:
        """J_omega at the current point with this sweep's weights (what a sweep decreases)."""
        flops = self.flops  # a traced value is bookkeeping, not the method's work
        total = self._output()
        for k in range(1, self.loss.depth):
            lin = self.loss.layers[k - 1].linear
            total = (total
                     + self._interior(k, self._z(k - 1), self._v(k - 1), lin.weight, lin.bias,
                                      self._z(k), self._v(k))
                     + self._boundary(k, self._zb(k - 1), lin.weight, lin.bias, self._zb(k)))
        self.flops = flops
        return float(total)

    # -- closed-form blocks --------------------------------------------------------------------
    @torch.no_grad()
    def solve_output_layer(self) -> None:
        """(W_L, b_L) = argmin of their terms of J_omega + rho |(W, b) - (W_L, b_L)|^2, exactly:
        rows [v_{L-1}, 0] -> f and [zb_{L-1}, 1] -> g, scaled by sqrt(m / N) and
        sqrt(m lambda / M) so that proximal_lstsq's mean over its m = N + M rows is
        mean_int + lambda mean_bnd."""
        L, lin = self.loss.depth, self.loss.layers[-1].linear
        v, zb = self._v(L - 1), self._zb(L - 1)
        m = self.n + self.m
        s_int, s_bnd = (m / self.n) ** 0.5, (m * self.lam / self.m) ** 0.5
        a = torch.cat([torch.cat([s_int * v, torch.zeros_like(v[:, :1])], dim=1),
                       torch.cat([s_bnd * zb, torch.full_like(zb[:, :1], s_bnd)], dim=1)])
        y = torch.cat([s_int * self.loss.source, s_bnd * self.loss.boundary_values])
        old = torch.cat([lin.weight.mT, lin.bias.unsqueeze(0)], dim=0)
        x = proximal_lstsq(a, y, old, self.rho)
        lin.weight.copy_(x[:-1].mT)
        lin.bias.copy_(x[-1])
        n, k = a.shape[1], y.shape[1]
        self._linalg(n**3 / 3.0 + 2.0 * n * n * k)
        self.flops += 2.0 * m * n * n + 2.0 * m * n * k

    def _proximal_rows(self, w: torch.Tensor, r: torch.Tensor,
                       weight: torch.Tensor) -> torch.Tensor:
        """argmin_D |D W^T - r|_F^2 + weight |D|_F^2 (each row on its own), in the dual form
        D = r (W W^T + weight I)^{-1} W: a d_out x d_out system."""
        d = w.shape[0]
        gram = w @ w.mT + weight * torch.eye(d, dtype=w.dtype, device=w.device)
        self.flops += 2.0 * d * d * w.shape[1] + 2.0 * r.shape[0] * d * w.shape[1]
        self._linalg(d**3 / 3.0 + 2.0 * d * d * r.shape[0])
        return torch.cholesky_solve(r.mT, torch.linalg.cholesky(gram)).mT @ w

    @torch.no_grad()
    def solve_last_aux(self) -> None:
        """v_{L-1} = argmin mean_int [|v W_L^T - f|^2 + w^q_{L-1} |v - t|^2] with
        t = s'(a_{L-1}) * (v_{L-2} W_{L-1}^T), exactly."""
        L, hid = self.loss.depth, self.loss.layers[-2].linear
        w_out, ds = self.loss.layers[-1].linear.weight, self.loss.rules[-1][0]
        t = ds(self._mm(self._z(L - 2), hid.weight, hid.bias)) * self._mm(self._v(L - 2),
                                                                          hid.weight)
        r = self.loss.source - self._mm(t, w_out)
        self._v(L - 1).copy_(t + self._proximal_rows(w_out, r, self.w_q[L - 2]))

    @torch.no_grad()
    def solve_last_boundary_aux(self) -> None:
        """zb_{L-1} = argmin mean_bnd [|zb W_L^T + b_L - g|^2 + omega_{L-1} |zb - s_{L-1}|^2]
        (times lambda), exactly."""
        L, hid, out = self.loss.depth, self.loss.layers[-2], self.loss.layers[-1].linear
        s = hid.activation(self._mm(self._zb(L - 2), hid.linear.weight, hid.linear.bias))
        r = self.loss.boundary_values - out.bias - self._mm(s, out.weight)
        self._zb(L - 1).copy_(s + self._proximal_rows(out.weight, r, self.omega_b[L - 2]))

    # -- gradient blocks -----------------------------------------------------------------------
    def _backward_flops(self, key: tuple[str, int]) -> float:
        """Matrix-product FLOPs of the backward pass of one gradient block's local terms."""
        kind, k = key
        if kind == "w":  # dW from z_{k-1} W^T, v_{k-1} W^T and zb_{k-1} W^T
            lin = self.loss.layers[k - 1].linear
            return 2.0 * (2 * self.n + self.m) * lin.in_features * lin.out_features
        nxt = self.loss.layers[k].linear  # an auxiliary of layer k reaches J through W_{k+1}
        rows = self.m if kind == "zb" else self.n
        return 2.0 * rows * nxt.in_features * nxt.out_features

    def _step(self, key: tuple[str, int], block: list[torch.Tensor], scale: float,
              points: int, local: Callable[[], torch.Tensor]) -> None:
        """bcd.py's backtracking step with step eta / (2 scale / points)."""
        self._descend(key, block, scale * self.n / points, local)

    def step_hidden_layer(self, k: int) -> None:
        """Gradient step on (W_k, b_k), 1 <= k <= L-1: their interior and boundary terms."""
        lin = self.loss.layers[k - 1].linear
        zp, vp, zbp = self._z(k - 1), self._v(k - 1), self._zb(k - 1)
        z, v, zb = self._z(k), self._v(k), self._zb(k)
        scale = float(self.w_q[k - 1] + self.lam * self.omega_b[k - 1])
        if z is not None:
            scale += float(self.w_r[k - 1].mean())
        self._step(("w", k), [lin.weight, lin.bias], scale, self.n,
                   lambda: (self._interior(k, zp, vp, lin.weight, lin.bias, z, v)
                            + self._boundary(k, zbp, lin.weight, lin.bias, zb)))

    def step_value_aux(self, k: int) -> None:
        """Gradient step on z_k, 1 <= k <= L-2: w^r_k |r_k|^2 and all of layer k+1's interior
        terms (z_k enters a_{k+1}, so q_{k+1} through s' and r_{k+1} through s)."""
        own, nxt = self.loss.layers[k - 1], self.loss.layers[k].linear
        with torch.no_grad():  # what does not depend on z_k
            s = own.activation(self._mm(self._z(k - 1), own.linear.weight, own.linear.bias))
            wv = self._mm(self._v(k), nxt.weight)
        z, z_next, v_next = self._z(k), self._z(k + 1), self._v(k + 1)
        scale = float(self.w_r[k - 1].mean() + self.w_q[k] * nxt.weight.square().sum())
        if z_next is not None:
            scale += float(self.w_r[k].mean() * nxt.weight.square().sum())

        def local() -> torch.Tensor:
            own_term = (self.w_r[k - 1] * (z - s).square().sum(1)).mean()
            return own_term + self._interior(k + 1, z, None, nxt.weight, nxt.bias, z_next,
                                             v_next, wv=wv)

        self._step(("z", k), [z], scale, self.n, local)

    def step_derivative_aux(self, k: int) -> None:
        """Gradient step on v_k, 1 <= k <= L-2: w^q_k |q_k|^2 and w^q_{k+1} |q_{k+1}|^2 (v_k
        enters q_{k+1} through W_{k+1} v_k; the weights built from it are held fixed)."""
        own, nxt = self.loss.layers[k - 1].linear, self.loss.layers[k].linear
        ds_own, ds_nxt = self.loss.rules[k - 1][0], self.loss.rules[k][0]
        with torch.no_grad():
            t = ds_own(self._mm(self._z(k - 1), own.weight, own.bias)) * self._mm(
                self._v(k - 1), own.weight)
            d_next = ds_nxt(self._mm(self._z(k), nxt.weight, nxt.bias))
        v, v_next = self._v(k), self._v(k + 1)
        scale = float(self.w_q[k - 1] + self.w_q[k] * nxt.weight.square().sum())

        def local() -> torch.Tensor:
            q_next = v_next - d_next * self._mm(v, nxt.weight)
            return (self.w_q[k - 1] * (v - t).square().sum(1).mean()
                    + self.w_q[k] * q_next.square().sum(1).mean())

        self._step(("v", k), [v], scale, self.n, local)

    def step_boundary_aux(self, k: int) -> None:
        """Gradient step on zb_k, 1 <= k <= L-2: its own boundary term and layer k+1's."""
        own, nxt = self.loss.layers[k - 1], self.loss.layers[k].linear
        with torch.no_grad():
            s = own.activation(self._mm(self._zb(k - 1), own.linear.weight, own.linear.bias))
        zb, zb_next = self._zb(k), self._zb(k + 1)
        scale = float(self.lam * (self.omega_b[k - 1]
                                  + self.omega_b[k] * nxt.weight.square().sum()))

        def local() -> torch.Tensor:
            own_term = self.lam * self.omega_b[k - 1] * (zb - s).square().sum(1).mean()
            return own_term + self._boundary(k + 1, zb, nxt.weight, nxt.bias, zb_next)

        self._step(("zb", k), [zb], scale, self.m, local)

    # -- a sweep -------------------------------------------------------------------------------
    def sweep(self, trace: list[float] | None = None) -> None:
        """One sweep from the output layer down; the weights fixed at their value at the start.
        With ``trace``, J_omega after every block is appended to it (J_omega at the start
        first): 1 + 3 + (L - 1) + 3 (L - 2) values."""
        self.refresh_weights()

        def log() -> None:
            if trace is not None:
                trace.append(self.objective())

        log()
        for block in (self.solve_output_layer, self.solve_last_aux,
                      self.solve_last_boundary_aux):
            block()
            log()
        for k in range(self.loss.depth - 1, 0, -1):
            self.step_hidden_layer(k)
            log()
            if k >= 2:
                for block in (self.step_value_aux, self.step_derivative_aux,
                              self.step_boundary_aux):
                    block(k - 1)
                    log()
