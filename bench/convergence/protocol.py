"""The comparison protocol: lr grid on validation, pick the best lr, then seeds on test.

Phase 1 (grid): every optimizer at every lr of its grid, ``grid_seeds`` seeds, validation split.
Phase 2 (final): each optimizer at its selected lr, ``final_seeds`` seeds, test split; in the same
batch, the warm-up study (TM-SGD at its selected lr with ``switch_step`` a fraction of the budget)
and the paper's protocol (TM-SGD at SGD's selected lr, TM-SGD-M at SGD-M's).
"""

from __future__ import annotations

import math
from typing import Any

from .config import Config
from .optimizers import OPTIMIZERS, lr_grid
from .pool import run_all
from .spec import RunSpec, execute
from .tasks import get_task

PAPER_LR_PAIRS = {"tmsgd": "sgd", "tmsgdm": "sgdm"}  # TM variant -> the baseline whose lr it takes


def steps_for(task: str, config: Config) -> int:
    t = get_task(task)
    return t.steps_quick if config.quick else t.steps_full


def _cost(spec: RunSpec) -> float:
    return spec.steps * (4.0 if spec.task == "gan2d" else 1.0)


def _score(records: list[dict[str, Any]], higher_is_better: bool) -> float:
    """Mean validation metric over seeds, oriented so that larger is better; diverged = -inf."""
    values = [r["final_metric"] for r in records]
    if any(v is None or not math.isfinite(v) for v in values):
        return -math.inf
    mean = sum(values) / len(values)
    return mean if higher_is_better else -mean


def grid_specs(tasks: list[str], config: Config) -> list[RunSpec]:
    return [
        RunSpec(task, opt, lr, seed, steps_for(task, config), "val", phase="grid")
        for task in tasks
        for opt in OPTIMIZERS
        for lr in lr_grid(opt, config.quick)
        for seed in config.grid_seeds
    ]


def select_lrs(grid: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Best lr per task and optimizer, by mean final validation metric (ties: the smaller lr)."""
    by_key: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for rec in grid:
        s = rec["spec"]
        by_key.setdefault((s["task"], s["optimizer"], s["lr"]), []).append(rec)
    best: dict[str, dict[str, tuple[float, float]]] = {}
    for (task, opt, lr), recs in sorted(by_key.items()):
        score = _score(recs, get_task(task).higher_is_better)
        current = best.setdefault(task, {}).get(opt)
        if current is None or score > current[1]:
            best[task][opt] = (lr, score)
    return {task: {opt: lr for opt, (lr, _) in d.items()} for task, d in best.items()}


def final_specs(lrs: dict[str, dict[str, float]], config: Config) -> list[RunSpec]:
    specs = []
    for task, chosen in lrs.items():
        steps = steps_for(task, config)
        for opt, lr in chosen.items():
            specs += [RunSpec(task, opt, lr, s, steps, "test", phase="final")
                      for s in config.final_seeds]
        for tm, base in PAPER_LR_PAIRS.items():
            if chosen[base] != chosen[tm]:
                specs += [RunSpec(task, tm, chosen[base], s, steps, "test", phase="paper_lr")
                          for s in config.final_seeds]
        if task in config.switch_tasks:
            for frac in config.switch_fractions:
                specs += [
                    RunSpec(task, "tmsgd", chosen["tmsgd"], s, steps, "test",
                            switch_step=int(frac * steps), phase="switch")
                    for s in config.final_seeds
                ]
    return specs


def run_protocol(tasks: list[str], config: Config, workers: int) -> dict[str, Any]:
    """Run both phases; return every run record and the selected learning rates."""
    grid = run_all(execute, grid_specs(tasks, config), workers, _cost, "grid")
    lrs = select_lrs(grid)
    final = run_all(execute, final_specs(lrs, config), workers, _cost, "final")
    return {"selected_lr": lrs, "runs": grid + final}
