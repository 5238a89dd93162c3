"""The two protocol sizes: quick (a smoke-level run of the whole pipeline, minutes) and full."""

from __future__ import annotations

from dataclasses import dataclass, field

from .design import (
    BUDGET_FAMILIES,
    BUDGET_STEPS_FACTOR,
    COARSE_E_FULL,
    COARSE_E_QUICK,
    FAMILIES,
    QUICK_TEST_SEEDS,
    VALIDATION_SEEDS_FULL,
    VALIDATION_SEEDS_QUICK,
    WINDOW_FULL,
    WINDOW_QUICK,
    budget_test_seeds,
    full_test_seeds,
)
from .tasks import TASK_NAMES


@dataclass(frozen=True)
class Config:
    mode: str
    quick: bool
    grid_seeds: tuple[int, ...]  # seeds of the lr search (validation split)
    final_seeds: tuple[int, ...]  # seeds of the test runs, never used in the search
    coarse_e: dict[str, tuple[int, ...]] = field(default_factory=dict)  # lr = 2 ** (e / 2)
    window: int = 2  # fine stage: lattice points on each side of the anchors
    extend: int = 0  # rounds of one more lr beyond a best that sits at the edge of those tried
    quadratic_steps: int = 3000  # theory checks: steps of the real optimizers on quadratics
    # fine windows span the anchors of the configuration's cover set (design.COVER_SETS); the
    # quick run searches only around each configuration's own anchors, to stay a few minutes
    cover_lrs: bool = True
    steps_factor: int = 1  # every task's step budget times this (issue 25: budgets 4x)
    # the declared families whose comparisons the run makes; the groups searched follow
    # (design.groups_for)
    families: tuple[str, ...] = tuple(FAMILIES)


QUICK = Config(
    mode="quick",
    quick=True,
    grid_seeds=VALIDATION_SEEDS_QUICK,
    final_seeds=QUICK_TEST_SEEDS,
    coarse_e=COARSE_E_QUICK,
    window=WINDOW_QUICK,
    quadratic_steps=800,
    cover_lrs=False,
)

FULL = Config(
    mode="full",
    quick=False,
    grid_seeds=VALIDATION_SEEDS_FULL,
    # sized by design.n_seeds for the largest declared family over all tasks
    final_seeds=full_test_seeds(len(TASK_NAMES)),
    coarse_e=COARSE_E_FULL,
    window=WINDOW_FULL,
    extend=2,
    quadratic_steps=3000,
)

# Issue 25 item 2 (design.BUDGET_*): the full protocol at 4x the steps, primary and momentum
# families only, on its own fresh test seeds.
BUDGET = Config(
    mode="budget",
    quick=False,
    grid_seeds=VALIDATION_SEEDS_FULL,
    final_seeds=budget_test_seeds(),
    coarse_e=COARSE_E_FULL,
    window=WINDOW_FULL,
    extend=2,
    quadratic_steps=3000,
    steps_factor=BUDGET_STEPS_FACTOR,
    families=BUDGET_FAMILIES,
)
