"""The two protocol sizes: quick (a smoke-level run, minutes) and full (the reported one)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    mode: str
    quick: bool
    grid_seeds: tuple[int, ...]  # seeds for lr selection on the validation split
    final_seeds: tuple[int, ...]  # seeds for the test runs at the selected lr
    switch_tasks: tuple[str, ...]  # tasks where TM-SGD's warm-up (switch_step) is studied
    switch_fractions: tuple[float, ...]  # switch_step as a fraction of the step budget
    stability_seeds: tuple[int, ...]  # seeds for the CNN's largest-stable-lr bisection
    stability_cnn_steps: int
    stability_bisections: int
    quadratic_steps: int


QUICK = Config(
    mode="quick",
    quick=True,
    grid_seeds=(0,),
    final_seeds=(100, 101),
    switch_tasks=("digits_cnn", "lstm_seq"),
    switch_fractions=(0.25,),
    stability_seeds=(0,),
    stability_cnn_steps=100,
    stability_bisections=5,
    quadratic_steps=2000,
)

FULL = Config(
    mode="full",
    quick=False,
    grid_seeds=(0, 1),
    final_seeds=(100, 101, 102, 103, 104),
    switch_tasks=("digits_cnn", "lstm_seq"),
    switch_fractions=(0.05, 0.25, 0.5),
    stability_seeds=(0, 1, 2),
    stability_cnn_steps=300,
    stability_bisections=10,
    quadratic_steps=5000,
)
