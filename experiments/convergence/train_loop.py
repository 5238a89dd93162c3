"""The minibatch training loop shared by the supervised tasks, with curves and divergence checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .optimizers import make_optimizer
from .spec import RunSpec

N_EVALS = 10  # evaluation points per run (plus step 0)
DIVERGED_LOSS = 1e6


@dataclass(frozen=True)
class SupervisedData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


class SupervisedTask(Protocol):
    batch_size: int

    def data(self) -> SupervisedData: ...
    def model(self) -> torch.nn.Module: ...
    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...
    def metric(self, out: torch.Tensor, y: torch.Tensor) -> float: ...


def _finite(x: float) -> bool:
    return math.isfinite(x) and abs(x) < DIVERGED_LOSS


def train_supervised(task: SupervisedTask, spec: RunSpec) -> dict[str, Any]:
    """Train ``task``'s model as ``spec`` says; return curves and the final eval metric."""
    data = task.data()
    torch.manual_seed(spec.seed)
    model = task.model()
    opt, sched = make_optimizer(spec.optimizer, model.parameters(), spec.lr, spec.steps)
    gen = torch.Generator().manual_seed(1_000_003 * (spec.seed + 1))
    x_eval, y_eval = (data.x_val, data.y_val) if spec.split == "val" else (data.x_test, data.y_test)
    n = data.x_train.shape[0]
    eval_every = max(1, spec.steps // N_EVALS)
    curves: dict[str, list[float]] = {
        "step": [], "train_loss": [], "eval_loss": [], "eval_metric": []
    }

    def evaluate(step: int, train_loss: float) -> bool:
        model.eval()
        with torch.no_grad():
            out = model(x_eval)
            eval_loss = float(task.loss(out, y_eval))
            metric = task.metric(out, y_eval) if _finite(eval_loss) else float("nan")
        model.train()
        curves["step"].append(step)
        curves["train_loss"].append(train_loss)
        curves["eval_loss"].append(eval_loss)
        curves["eval_metric"].append(metric)
        return _finite(eval_loss) and math.isfinite(metric)

    with torch.no_grad():
        init_loss = float(task.loss(model(data.x_train[:512]), data.y_train[:512]))
    evaluate(0, init_loss)
    perm, pos = torch.randperm(n, generator=gen), 0
    running, count, diverged = 0.0, 0, False
    for step in range(1, spec.steps + 1):
        if pos + task.batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + task.batch_size]
        pos += task.batch_size
        opt.zero_grad(set_to_none=True)
        loss = task.loss(model(data.x_train[idx]), data.y_train[idx])
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        value = float(loss.detach())
        if not _finite(value):
            diverged = True
            break
        running, count = running + value, count + 1
        if step % eval_every == 0 or step == spec.steps:
            if not evaluate(step, running / count):
                diverged = True
                break
            running, count = 0.0, 0
    final = None if diverged else curves["eval_metric"][-1]
    return {"curves": curves, "final_metric": final, "diverged": diverged}


class TrainedSupervised:
    """Base of the supervised tasks: they all run through train_supervised."""

    def run(self, spec: RunSpec) -> dict[str, Any]:
        return train_supervised(self, spec)


class Classification(TrainedSupervised):
    """Base of the classification tasks: cross-entropy loss, accuracy in percent."""

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(out, y)

    def metric(self, out: torch.Tensor, y: torch.Tensor) -> float:
        return 100.0 * float((out.argmax(1) == y).float().mean())
