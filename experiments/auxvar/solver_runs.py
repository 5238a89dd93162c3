"""One run of the solver study: a method at one setting on one seed, trained until it has spent
the FLOP budget, with the task's original loss, the FLOPs and the training wall time
(evaluations of the loss for the log excluded) logged along the way.

The original loss is the training MSE on the regression tasks and the PINN loss on pinn4; the
record keeps the keys ``mse`` and ``final_mse`` for both, so that the regression run's stored
records read as they were written."""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode

from tmsgd_kernels.auxvar import AuxVarLoss, FirstOrderPINNLoss

from .bcd import BlockCoordinateSolver
from .bcd_pinn import PINNBlockCoordinateSolver
from .solver_design import DIVERGED_FACTOR
from .tasks import TASKS, build_loss, test_error

# The block-coordinate solver of each kind of task's J (tasks.TaskInfo.kind)
BLOCK_SOLVERS: dict[str, type[BlockCoordinateSolver] | type[PINNBlockCoordinateSolver]] = {
    "regression": BlockCoordinateSolver, "pinn": PINNBlockCoordinateSolver}


@dataclass(frozen=True)
class SolverRun:
    """What to run: task, method (bcd, gd, adam, lbfgs), its setting, seed, budget, phase."""

    task: str
    method: str
    setting: float
    seed: int
    evals: int
    checkpoints: int
    phase: str  # "tune" or "test"


def original_loss(loss: AuxVarLoss | FirstOrderPINNLoss, graph: bool = True) -> torch.Tensor:
    """The loss the baselines train on: the MSE, or the PINN loss, whose input derivatives are
    taken by autograd (with their graph when ``graph``, so that its gradient in theta is
    exact; without it, only its value)."""
    if isinstance(loss, FirstOrderPINNLoss):
        return loss.pinn_loss(create_graph=graph)
    return loss.mse()


class GlobalFlopCounter(FlopCounterMode):
    """torch's flop counter without its per-module attribution: the module tracker's backward
    hooks raise inside the nested autograd.grad that the PINN loss takes for its input
    derivatives. The total ("Global") is counted by the same dispatch mode and formulas."""

    def __enter__(self) -> GlobalFlopCounter:
        self.flop_counts.clear()
        self.mode = _FlopCounterMode(self)
        self.mode.__enter__()
        return self

    def __exit__(self, *args: object) -> None:
        assert self.mode is not None
        self.mode.__exit__(*args)
        self.mode = None


def eval_flops(loss: AuxVarLoss | FirstOrderPINNLoss) -> float:
    """FLOPs of one forward and backward pass of the original loss, as torch's flop counter
    counts them (for the PINN loss that includes the input-derivative pass and its backward)."""
    params = loss.theta_parameters()
    with GlobalFlopCounter(display=False) as counter:
        grads = torch.autograd.grad(original_loss(loss), params)
    del grads
    return float(counter.get_total_flops())


def _original_step(loss: Any, method: str, setting: float,
                   evals_left: Callable[[], int]) -> Callable[[], int]:
    """A step of ``method`` on the original loss; the step returns how many gradient evaluations it
    made. An L-BFGS step is one call of torch's LBFGS: up to 20 iterations with a strong-Wolfe
    line search, at most ``evals_left()`` evaluations (its line search may add a few). One
    iteration per call would re-evaluate the loss at every call, and torch's default
    max_eval for max_iter=1 (one evaluation) stalls it."""
    params = loss.theta_parameters()
    if method == "lbfgs":
        opt: torch.optim.Optimizer = torch.optim.LBFGS(
            params, lr=setting, max_iter=20, history_size=20, line_search_fn="strong_wolfe")
    elif method == "adam":
        opt = torch.optim.Adam(params, lr=setting)
    elif method == "gd":
        opt = torch.optim.SGD(params, lr=setting)
    else:
        raise ValueError(f"unknown method {method!r}")
    calls = [0]

    def closure() -> torch.Tensor:
        calls[0] += 1
        opt.zero_grad(set_to_none=True)
        value = original_loss(loss)
        value.backward()
        return value

    def step() -> int:
        calls[0] = 0
        if method == "lbfgs":
            opt.param_groups[0]["max_eval"] = max(1, min(25, evals_left()))
            opt.step(closure)
        else:
            closure()
            opt.step()
        return calls[0]

    return step


def execute(spec: SolverRun) -> dict[str, Any]:
    """Train until the FLOP budget is spent; return the record (spec, curves, final values)."""
    torch.manual_seed(spec.seed)
    loss = build_loss(spec.task, spec.seed)
    per_eval = eval_flops(loss)
    budget = spec.evals * per_eval
    marks = [budget * (i + 1) / spec.checkpoints for i in range(spec.checkpoints)]
    solver_name = None
    if spec.method == "bcd":
        solver = BLOCK_SOLVERS[TASKS[spec.task].kind](loss, rho=spec.setting)
        solver_name = type(solver).__name__

        def step() -> float:
            before = solver.flops
            solver.sweep()
            return solver.flops - before
    else:
        original = _original_step(
            loss, spec.method, spec.setting,
            lambda: math.ceil((budget - flops) / per_eval))

        def step() -> float:
            return original() * per_eval

    def mse() -> float:
        with torch.no_grad():
            return float(original_loss(loss, graph=False))

    curves: dict[str, list[float]] = {"flops": [0.0], "wall": [0.0], "mse": [mse()]}
    start, flops, wall, diverged, iterations = curves["mse"][0], 0.0, 0.0, False, 0
    while flops < budget:
        t0 = time.perf_counter()
        try:
            flops += step()
        except torch.linalg.LinAlgError:  # a factorization of non-finite or singular data
            diverged = True
        wall += time.perf_counter() - t0
        iterations += 1
        if diverged:
            break
        if flops >= marks[0] or flops >= budget:
            while marks and flops >= marks[0]:
                marks.pop(0)
            value = mse()
            curves["flops"].append(flops)
            curves["wall"].append(wall)
            curves["mse"].append(value)
            if not math.isfinite(value) or value > DIVERGED_FACTOR * start:
                diverged = True
                break
    return {
        "spec": asdict(spec),
        "curves": curves,
        "diverged": diverged,
        "final_mse": math.inf if diverged else curves["mse"][-1],
        "test_error": math.inf if diverged else test_error(loss),
        "flops": flops,
        "flops_budget": budget,
        "flops_per_eval": per_eval,
        "wall": wall,
        "iterations": iterations,
        "solver": solver_name,
    }


def mapped(fn: Callable[..., Any], *iterables: Iterable[Any], workers: int = 1) -> list[Any]:
    """``fn`` over ``iterables`` in order: in this process, or in ``workers`` spawned processes
    of one torch thread each. Spawned, not forked: a forked child of a process that has used
    torch's OpenMP pool can hang in it."""
    if workers == 1:
        return list(map(fn, *iterables))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return list(pool.map(fn, *iterables))
