"""An alternating block-coordinate solver for the auxiliary-variable loss J(theta, z) of an MLP
(issue 25 item 3), the way the layer-separation papers of the method's group minimise such
losses (alternating block updates, closed-form least-squares steps where the block enters J
quadratically), instead of joint first-order steps on every variable.

One sweep, with the weights omega = omega(theta) computed once at its start and held fixed
through it (so the sweep descends one fixed function J_omega), visits the blocks from the output
down:

1. (W_L, b_L): J_omega is a linear least-squares problem in them (only the output term depends
   on them). Its plain minimiser interpolates: the features z_{L-1} of a tanh network have
   singular values down to 1e-11 of the largest, and the exact least-squares weights reach
   |W_L|^2 ~ 1e22 at the first sweep, which sets every omega_l to that scale. So the block is
   solved as a proximal least-squares problem, mean_n |z W^T + b - y|^2 + rho |(W, b) -
   (W, b)_old|^2, exactly (normal equations, Cholesky), as proximal block-coordinate methods do
   to prove their decrease; rho is the method's one tuned constant.
2. z_{L-1}: quadratic, |z W_L^T + b_L - y|^2 + omega_{L-1} |z - s_{L-1}|^2 per point, solved
   exactly (in its dual form: a d_out x d_out positive definite system, Cholesky).
3. For l = L-1 .. 1: (W_l, b_l), then z_{l-1} (if l > 1): one gradient step on that block's
   terms of J_omega. The step is eta_block / (2 c_block / N) where c_block is the block's weight
   (omega_l for W_l; omega_{l-1} + omega_l |W_l|_F^2 for z_{l-1}), so the omega scale (up to
   1e11 at depth 12) is divided out and eta_block is a scale-free step; eta_block adapts by
   backtracking: try twice the last accepted value, halve until the block's terms decrease by
   Armijo's rule (c = 1e-4), and leave the block unchanged if 30 halvings do not.

Every block update therefore leaves J_omega no larger (the closed-form blocks are exact minimisers,
the gradient blocks satisfy Armijo's rule or are skipped): J_omega decreases monotonically
through a sweep. omega is then recomputed from the new weights at the next sweep's start; that
update may raise J (the bound MSE <= L * J holds for every z and theta whatever happens).

FLOPs are counted as torch.utils.flop_counter counts them (2 m k n per matrix product,
elementwise work not counted), plus n^3 / 3 for a Cholesky factorization, which that counter
does not see, and 2 n^2 per right-hand side for its two triangular solves.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tmsgd_kernels.auxvar import AuxVarLoss

ARMIJO = 1e-4
MAX_HALVINGS = 30


def proximal_lstsq(a: torch.Tensor, b: torch.Tensor, x_old: torch.Tensor,
                   rho: float) -> torch.Tensor:
    """argmin_x |a x - b|_F^2 / m + rho |x - x_old|_F^2 (m = rows of ``a``), exactly: the
    normal equations (a^T a + m rho I) x = a^T b + m rho x_old, by Cholesky."""
    m, n = a.shape
    gram = a.mT @ a + m * rho * torch.eye(n, dtype=a.dtype, device=a.device)
    chol = torch.linalg.cholesky(gram)
    return torch.cholesky_solve(a.mT @ b + m * rho * x_old, chol)


class BacktrackingBlocks:
    """What the block-coordinate solvers share: the FLOP counters and one backtracking gradient
    step per block with a scale-free step size kept per block. A solver sets ``n`` (the point
    count its step scale uses) and defines ``_backward_flops(key)``."""

    n: int

    def __init__(self, eta: float) -> None:
        if not eta > 0:
            raise ValueError(f"eta must be positive, got {eta}")
        # scale-free step per gradient block, keyed (kind, 1-based layer index)
        self.eta: dict[tuple[str, int], float] = {}
        self.eta0 = eta
        self.flops = 0.0
        # the part of ``flops`` that torch.utils.flop_counter does not see (factorizations and
        # triangular solves), kept apart so that a test can check the rest against it
        self.flops_linalg = 0.0

    def _backward_flops(self, key: tuple[str, int]) -> float:
        """Matrix-product FLOPs of the backward pass of one gradient block's local terms."""
        raise NotImplementedError

    def _linalg(self, flops: float) -> None:
        self.flops += flops
        self.flops_linalg += flops

    def _descend(self, key: tuple[str, int], block: list[torch.Tensor], weight: float,
                 local: Callable[[], torch.Tensor]) -> None:
        """One backtracking gradient step on ``block`` for the local terms ``local()``, step
        eta / (2 weight / N) with eta adapted per block."""
        with torch.enable_grad():
            for t in block:
                t.requires_grad_(True)
            try:
                f0 = local()
                grads = torch.autograd.grad(f0, block)
            finally:
                for t in block:
                    t.requires_grad_(False)
        f0 = float(f0.detach())
        self.flops += self._backward_flops(key)
        g2 = float(sum(g.square().sum() for g in grads))
        if g2 == 0.0:
            return
        eta = 2.0 * self.eta.get(key, self.eta0 / 2.0)
        scale = self.n / (2.0 * weight)
        start = [t.detach().clone() for t in block]
        with torch.no_grad():
            for _ in range(MAX_HALVINGS):
                step = eta * scale
                for t, t0, g in zip(block, start, grads):
                    t.copy_(t0 - step * g)
                if float(local()) <= f0 - ARMIJO * step * g2:
                    self.eta[key] = eta
                    return
                eta /= 2.0
            for t, t0 in zip(block, start):  # no decrease found: leave the block as it was
                t.copy_(t0)
            self.eta[key] = eta


class BlockCoordinateSolver(BacktrackingBlocks):
    """Sweeps of the block-coordinate method on an ``AuxVarLoss`` with adaptive weights (its
    parameters are changed in place). ``flops`` accumulates the work done."""

    def __init__(self, loss: AuxVarLoss, rho: float, eta: float = 1.0) -> None:
        if loss.weights_mode != "adaptive" or loss.weight_grad:
            raise ValueError("the block-coordinate solver needs adaptive weights held fixed "
                             "within a sweep (weights='adaptive', weight_grad=False)")
        if loss.depth < 2:
            raise ValueError("a one-layer network has no auxiliaries: it is least squares")
        if not rho > 0:
            raise ValueError(f"rho must be positive, got {rho}")
        super().__init__(eta)  # gradient blocks keyed ("w", l) or ("z", l)
        self.rho = rho
        self.loss = loss
        self.n = loss.inputs.shape[0]
        self.omega = loss.omegas().detach().clone()
        for p in loss.parameters():  # gradients are taken block by block, only where needed
            p.requires_grad_(False)

    # -- the terms of J_omega ------------------------------------------------------------
    def _z(self, k: int) -> torch.Tensor:
        """z_k (z_0 = x)."""
        return self.loss.inputs if k == 0 else self.loss.aux[k - 1]

    def _term(self, k: int, z_prev: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
              z: torch.Tensor) -> torch.Tensor:
        """omega_k * mean_n |z_k - s_k(z_{k-1} W_k^T + b_k)|^2 for a hidden layer k, and the
        output term mean_n |z_{L-1} W_L^T + b_L - y|^2 for k = L."""
        lay = self.loss.layers[k - 1]
        a = z_prev @ w.mT + b
        self.flops += 2.0 * z_prev.shape[0] * w.shape[0] * w.shape[1]
        if k == self.loss.depth:
            return (a - self.loss.targets).square().sum(1).mean()
        return self.omega[k - 1] * (z - lay.activation(a)).square().sum(1).mean()

    @torch.no_grad()
    def objective(self) -> float:
        """J_omega at the current point with this sweep's omega (what a sweep decreases)."""
        terms = self.loss.layer_terms()
        return float(terms[-1] + (self.omega * terms[:-1]).sum())

    # -- closed-form blocks ----------------------------------------------------------------
    @torch.no_grad()
    def solve_output_layer(self) -> None:
        """(W_L, b_L) = argmin mean_n |z_{L-1} W^T + b - y|^2 + rho |(W, b) - (W_L, b_L)|^2,
        exactly (the output term is the only one of J_omega that depends on them)."""
        lin = self.loss.layers[-1].linear
        z = self._z(self.loss.depth - 1)
        a = torch.cat([z, torch.ones_like(z[:, :1])], dim=1)
        old = torch.cat([lin.weight.mT, lin.bias.unsqueeze(0)], dim=0)
        x = proximal_lstsq(a, self.loss.targets, old, self.rho)
        lin.weight.copy_(x[:-1].mT)
        lin.bias.copy_(x[-1])
        m, n, k = a.shape[0], a.shape[1], self.loss.targets.shape[1]
        self._linalg(n**3 / 3.0 + 2.0 * n * n * k)
        self.flops += 2.0 * m * n * n + 2.0 * m * n * k

    @torch.no_grad()
    def solve_last_aux(self) -> None:
        """z_{L-1} = argmin |z W_L^T + b_L - y|^2 + omega_{L-1} |z - s_{L-1}|^2 per point.

        In the dual (push-through) form z = s + r (W W^T + omega I)^{-1} W with the residual
        r = y - b_L - s W_L^T: a d_out x d_out system (1 x 1 here) instead of width x width,
        and well conditioned whatever the size of W_L relative to omega."""
        L = self.loss.depth
        out = self.loss.layers[-1].linear
        hid = self.loss.layers[-2]
        om = self.omega[L - 2]
        s = hid.activation(hid.linear(self._z(L - 2)))
        w = out.weight  # (d_out, width)
        r = self.loss.targets - out.bias - s @ w.mT
        gram = w @ w.mT + om * torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
        chol = torch.linalg.cholesky(gram)
        self._z(L - 1).copy_(s + torch.cholesky_solve(r.mT, chol).mT @ w)
        n, d_in = self._z(L - 2).shape
        width, d_out = w.shape[1], w.shape[0]
        self._linalg(d_out**3 / 3.0 + 2.0 * d_out * d_out * n)
        self.flops += (2.0 * n * d_in * width + 2.0 * n * width * d_out
                       + 2.0 * d_out * d_out * width + 2.0 * n * d_out * width)

    # -- gradient blocks ---------------------------------------------------------------------
    def _backward_flops(self, key: tuple[str, int]) -> float:
        """Matrix-product FLOPs of the backward pass of one gradient block's local terms."""
        kind, k = key
        lin = self.loss.layers[k - 1].linear
        n = self.n
        if kind == "w":  # dL/dW_l = r^T z_{l-1}
            return 2.0 * n * lin.in_features * lin.out_features
        nxt = self.loss.layers[k].linear  # z_k: dL/dz_k through W_{k+1}
        return 2.0 * n * nxt.in_features * nxt.out_features

    def step_hidden_layer(self, k: int) -> None:
        """Gradient step on (W_k, b_k), 1 <= k <= L-1 (only omega_k's term depends on them)."""
        lin = self.loss.layers[k - 1].linear
        z_prev, z = self._z(k - 1), self._z(k)
        self._descend(("w", k), [lin.weight, lin.bias], float(self.omega[k - 1]),
                      lambda: self._term(k, z_prev, lin.weight, lin.bias, z))

    def step_aux(self, k: int) -> None:
        """Gradient step on z_k, 1 <= k <= L-2 (omega_k's term and omega_{k+1}'s)."""
        own, nxt = self.loss.layers[k - 1].linear, self.loss.layers[k].linear
        z_prev, z, z_next = self._z(k - 1), self._z(k), self._z(k + 1)
        with torch.no_grad():  # the first term's prediction does not depend on z_l
            s = self.loss.layers[k - 1].activation(own(z_prev))
        self.flops += 2.0 * self.n * own.in_features * own.out_features
        weight = float(self.omega[k - 1] + self.omega[k] * nxt.weight.square().sum())

        def local() -> torch.Tensor:
            first = self.omega[k - 1] * (z - s).square().sum(1).mean()
            return first + self._term(k + 1, z, nxt.weight, nxt.bias, z_next)

        self._descend(("z", k), [z], weight, local)

    # -- a sweep -------------------------------------------------------------------------------
    def sweep(self, trace: list[float] | None = None) -> None:
        """One sweep from the output layer down; omega fixed at its value at the start. With
        ``trace``, J_omega after every block is appended to it (J_omega at the start first)."""
        self.omega = self.loss.omegas().detach().clone()
        L = self.loss.depth

        def log() -> None:
            if trace is not None:
                trace.append(self.objective())

        log()
        self.solve_output_layer()
        log()
        self.solve_last_aux()
        log()
        for k in range(L - 1, 0, -1):
            self.step_hidden_layer(k)
            log()
            if k >= 2:
                self.step_aux(k - 1)
                log()
