"""The study's design, fixed in code before any run: configurations searched, how they are grouped,
the comparisons and their correction, and the number of seeds from a power calculation.

Groups: a group is what a comparison names ("sgdm" = SGD with momentum tuned over 0.8, 0.9,
0.95). Each group lists configurations; the one with the best validation score (at its own best
lr) represents the group on the test seeds. Comparisons are (challenger, baseline) groups, made
on every task; all of them form one family for Holm's correction.
"""

from __future__ import annotations

from .optimizers import CANDIDATES, MOMENTA, PAPER_WARMUP, WARMUPS

_m = [f"{m:g}" for m in MOMENTA]

GROUPS: dict[str, tuple[str, ...]] = {
    "sgd": ("sgd",),
    "sgdm": tuple(f"sgdm{m}" for m in _m),
    "nesterov": tuple(f"nesterov{m}" for m in _m),
    "adam": ("adam",),
    "tmsgd": ("tmsgd",),
    "tmsgdm": tuple(f"tmsgdm{m}" for m in _m),
    "tmsgd_warm": tuple(f"tmsgd_w{round(100 * w)}" for w in WARMUPS),
    "sgd_cos": ("sgd_cos",),
    "tmsgd_cos": ("tmsgd_cos", "tmsgd_cos_w{paper}"),  # {paper}: the task's paper fraction
    "multistep": tuple(CANDIDATES),
}

COMPARISONS: tuple[tuple[str, str], ...] = (
    ("tmsgd", "sgd"),  # the paper's claim
    ("tmsgdm", "sgdm"),  # its momentum variant against tuned heavy ball
    ("tmsgdm", "nesterov"),  # is a TM-SGD-M gain only Nesterov's look-ahead?
    ("tmsgd_warm", "sgd"),  # the paper's warm-up (switch epoch), lr re-tuned
    ("tmsgd_cos", "sgd_cos"),  # both with a cosine schedule
    ("multistep", "sgd"),  # any other multistep rule against tuned baselines
    ("multistep", "sgdm"),
    ("multistep", "nesterov"),
)

ALPHA = 0.05  # family-wise error rate, Holm's step-down over every (task, comparison)
TARGET_EFFECT = 1.6  # d_z (mean / sd of per-seed differences) the seed count must detect
TARGET_POWER = 0.8
MIN_SEEDS = 10

# lr lattice: lr = 2 ** (e / 2), so neighbours differ by sqrt(2). Coarse stage: every 4th point.
COARSE_FAMILIES = ("sgd", "tmsgd", "sgdm0.9", "nesterov0.9", "tmsgdm0.9", "adam")
COARSE_E_FULL = {"sgd": (-16, -12, -8, -4, 0, 4), "adam": (-28, -24, -20, -16, -12)}
COARSE_E_QUICK = {"sgd": (-8, -2), "adam": (-18,)}
WINDOW_FULL = 1  # fine stage: anchors -1 .. +1 lattice points (lr / sqrt(2) .. lr * sqrt(2))
WINDOW_QUICK = 0


def members(group: str, task: str) -> tuple[str, ...]:
    """The configurations of ``group`` on ``task``."""
    paper = str(round(100 * PAPER_WARMUP[task]))
    return tuple(c.replace("{paper}", paper) for c in GROUPS[group])


def family_size(n_tasks: int) -> int:
    return n_tasks * len(COMPARISONS)


def n_seeds(n_tasks: int) -> int:
    """Seeds per test cell: power TARGET_POWER against TARGET_EFFECT at Holm's strictest level."""
    from experiments.stats import seeds_for_power

    return seeds_for_power(TARGET_EFFECT, ALPHA / family_size(n_tasks), TARGET_POWER, MIN_SEEDS)
