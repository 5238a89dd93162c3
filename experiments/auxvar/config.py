"""The two sizes of the study: quick (a smoke run of the whole pipeline) and full."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """Everything that sets the size of a run of the study."""

    name: str
    steps: int                    # full-batch steps = gradient evaluations per run
    eval_every: int               # log the true loss and the bound every this many steps
    tune_seeds: tuple[int, ...]   # learning rates are selected on these seeds
    test_seeds: tuple[int, ...]   # fresh seeds at the selected rates: what is reported
    tasks: tuple[str, ...]
    ablation_tasks: tuple[str, ...]
    gd_lrs: tuple[float, ...]     # grid for GD and TM-SGD
    adam_lrs: tuple[float, ...]
    screen_fraction: float = 0.25  # tuning stage 1: every grid point for this part of the budget
    finalists: int = 2             # tuning stage 2: this many best grid points, full budget
    mus: tuple[float, ...] = (1.0, 10.0, 100.0)


# Decades for the GD family: the stable rate on J scales like N / omega_1, which spans about
# 1 (depth 4) to 1e-9 (depth 12) at the default initialization, so the grid is wide.
GD_DECADES = tuple(10.0 ** -k for k in range(0, 11))

FULL = Config(
    name="full", steps=800, eval_every=25, tune_seeds=(0,), test_seeds=tuple(range(100, 105)),
    tasks=("reg4", "reg8", "pinn4", "reg12"), ablation_tasks=("reg8", "pinn4"),
    gd_lrs=GD_DECADES, adam_lrs=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
)

QUICK = Config(
    name="quick", steps=120, eval_every=20, tune_seeds=(0,), test_seeds=(100, 101, 102),
    tasks=("reg4", "reg8", "pinn4"), ablation_tasks=("reg8",),
    gd_lrs=(1e-1, 1e-3, 1e-5, 1e-7), adam_lrs=(1e-3, 1e-2),
)

CONFIGS = {"full": FULL, "quick": QUICK}
