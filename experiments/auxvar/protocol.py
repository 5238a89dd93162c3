"""The protocol: select each method's learning rate on the tuning seed(s) in two stages (every
grid point for a quarter of the budget, then the two best for the whole budget), run the
selected rate on fresh test seeds, and run the ablations at adaptive-adam's selected rate."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from .config import Config
from .methods import ABLATIONS, main_methods
from .stats import score
from .train import RunSpec, execute


def lr_grid(optimizer: str, cfg: Config) -> tuple[float, ...]:
    """Adam's grid or the GD family's (GD and TM-SGD share one)."""
    return cfg.adam_lrs if optimizer == "adam" else cfg.gd_lrs


def _slim(rec: dict[str, Any]) -> dict[str, Any]:
    """A tuning run without its curves (only its final values are used)."""
    return {k: v for k, v in rec.items() if k != "curves"}


def run_task(task: str, cfg: Config, progress: Callable[[str], None] = print
             ) -> dict[str, Any]:
    """Tuning, test and ablation runs of one task; returns the records and the selection."""
    methods = main_methods(cfg.mus)
    tune: list[dict[str, Any]] = []
    selected: dict[str, dict[str, Any]] = {}
    for m in methods:
        grid = lr_grid(m.optimizer, cfg)
        # stage 1 (screen): every grid point for a fraction of the budget, loss at the end only
        short = max(1, int(cfg.steps * cfg.screen_fraction))
        screen = {}
        for lr in grid:
            recs = [execute(RunSpec(task, m.name, lr, s, short, short, "screen"))
                    for s in cfg.tune_seeds]
            tune += [_slim(r) for r in recs]
            screen[lr] = statistics.fmean(score(r["final_loss"]) for r in recs)
        # stage 2: the best few at the full budget; ties keep the rate listed first in the grid
        finalists = sorted(grid, key=lambda lr: screen[lr])[:cfg.finalists]
        scores = {}
        for lr in finalists:
            recs = [execute(RunSpec(task, m.name, lr, s, cfg.steps, cfg.eval_every, "tune"))
                    for s in cfg.tune_seeds]
            tune += [_slim(r) for r in recs]
            scores[lr] = statistics.fmean(score(r["final_loss"]) for r in recs)
        best = min(finalists, key=lambda lr: scores[lr])
        selected[m.name] = {"lr": best, "score": scores[best],
                            "at_grid_edge": best in (max(grid), min(grid)),
                            "screen": {f"{lr:g}": v for lr, v in screen.items()},
                            "scores": {f"{lr:g}": v for lr, v in scores.items()}}
        progress(f"  {task} {m.name}: lr {best:g} (log10 loss {scores[best]:.3f})")
    test = [execute(RunSpec(task, m.name, selected[m.name]["lr"], s, cfg.steps,
                            cfg.eval_every, "test"))
            for m in methods for s in cfg.test_seeds]
    ablation = []
    if task in cfg.ablation_tasks:
        lr = selected["adaptive-adam"]["lr"]
        ablation = [execute(RunSpec(task, m.name, lr, s, cfg.steps, cfg.eval_every, "ablation"))
                    for m in ABLATIONS for s in cfg.test_seeds]
    return {"selected": selected, "tune": tune, "test": test, "ablation": ablation}
