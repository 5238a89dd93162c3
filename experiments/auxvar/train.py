"""One training run: full-batch steps, with the true loss, J and the bound logged at every
evaluation, and the training wall time (evaluations excluded) alongside."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .methods import make_optimizer, method_by_name
from .tasks import build_loss, test_error

# Diverged: the true loss (checked at every evaluation, and every step where it is the objective)
# non-finite or above 1e6 times its start, or the training objective non-finite or above 1e12
# times its start. J is judged more leniently on purpose: with omega held fixed per step, Adam
# lets J grow by 1e5 through omega while the true MSE falls (docs/AUXVAR.md section 5).
DIVERGED_FACTOR = 1e6
RUNAWAY_FACTOR = 1e12


@dataclass(frozen=True)
class RunSpec:
    """What to run: task, method, learning rate, seed, budget, and why (tune/test/ablation)."""

    task: str
    method: str
    lr: float
    seed: int
    steps: int
    eval_every: int
    phase: str


def _first_weight(loss: Any) -> float:
    """omega_1 (regression) or the first derivative weight (PINN): the worst conditioning."""
    with torch.no_grad():
        if hasattr(loss, "omegas"):
            return float(loss.omegas("adaptive")[0]) if loss.depth > 1 else 1.0
        _, w_q, _ = loss._weights(loss.interior_residuals()[3], "adaptive")
        return float(w_q[0]) if len(w_q) else 1.0


def execute(spec: RunSpec) -> dict[str, Any]:
    """Train and return the record: spec, curves, final values, divergence, wall time."""
    method = method_by_name(spec.method)
    loss = build_loss(spec.task, spec.seed, weights=method.weights, norm=method.norm,
                      weight_grad=method.weight_grad)
    aux = method.loss == "aux"
    is_pinn = not hasattr(loss, "omegas")
    theta, zs = loss.theta_parameters(), loss.aux_parameters()
    params = theta + zs if aux else theta
    opt = make_optimizer(method.optimizer, params, spec.lr)

    def objective() -> torch.Tensor:
        if aux:
            return loss()
        return loss.pinn_loss() if is_pinn else loss.mse()

    @torch.no_grad()
    def true_loss() -> float:
        return float(loss.pinn_loss(create_graph=False) if is_pinn else loss.mse())

    curves: dict[str, list[float]] = {k: [] for k in
                                      ("step", "wall", "loss", "objective", "bound", "omega1")}
    wall = 0.0
    diverged = False

    def log(step: int) -> None:
        if aux:
            true, bound = loss.bound()
            with torch.no_grad():
                obj = float(loss())
        else:
            true = obj = true_loss()
            bound = math.nan
        curves["step"].append(step)
        curves["wall"].append(wall)
        curves["loss"].append(true)
        curves["objective"].append(obj)
        curves["bound"].append(bound)
        curves["omega1"].append(_first_weight(loss) if aux else math.nan)

    log(0)
    start_obj = curves["objective"][0]
    for step in range(1, spec.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        obj = objective()
        if method.alternating:
            block = zs if step % 2 else theta
            for p, g in zip(block, torch.autograd.grad(obj, block)):
                p.grad = g
        else:
            obj.backward()
        opt.step()
        wall += time.perf_counter() - t0
        value = float(obj.detach())
        limit = RUNAWAY_FACTOR if aux else DIVERGED_FACTOR
        if not math.isfinite(value) or value > limit * start_obj:
            diverged = True
            break
        if step % spec.eval_every == 0 or step == spec.steps:
            log(step)
            if not math.isfinite(curves["loss"][-1]) or \
                    curves["loss"][-1] > DIVERGED_FACTOR * curves["loss"][0]:
                diverged = True
                break
    final = curves["loss"][-1] if not diverged else math.inf
    violations = sum(1 for a, b in zip(curves["loss"], curves["bound"])
                     if math.isfinite(b) and a > b * (1 + 1e-12))
    return {
        "spec": asdict(spec),
        "curves": curves,
        "diverged": diverged,
        "final_loss": final,
        "test_error": test_error(loss) if not diverged else math.inf,
        "wall": wall,
        "steps_done": curves["step"][-1],
        "bound_violations": violations,
        "bound_checked": sum(1 for b in curves["bound"] if math.isfinite(b)),
    }
