"""The study's design, fixed in code before any run: configurations searched, how they are grouped,
the comparisons in their families and their correction, the seeds, the lr-selection rules and
the number of test seeds from a power calculation.

Groups: a group is what a comparison names ("sgdm" = SGD with momentum tuned over 0.8, 0.9,
0.95). Each group lists configurations; the one with the best validation score (at its own best
lr) represents the group on the test seeds. Comparisons are (challenger, baseline) groups, made
on every task, and belong to one of three families (issue 25): Holm's correction runs within
each family; Holm over every comparison is reported beside it as a sensitivity line only.
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

# The families, in the order of their importance. The first is the paper's claim and the
# question the study exists for; the second asks whether the momentum variant beats the two
# momentum methods a user would otherwise pick; the third holds everything else (schedules,
# other coefficient sets), which is exploratory.
FAMILIES: dict[str, tuple[tuple[str, str], ...]] = {
    "primary": (
        ("tmsgd", "sgd"),  # the paper's claim, TM-SGD at its own tuned lr
        ("tmsgd_warm", "sgd"),  # the same with the paper's warm-up (switch epoch), re-tuned
    ),
    "momentum": (
        ("tmsgdm", "sgdm"),  # the momentum variant against tuned heavy ball
        ("tmsgdm", "nesterov"),  # is a TM-SGD-M gain only Nesterov's look-ahead?
    ),
    "exploratory": (
        ("tmsgd_cos", "sgd_cos"),  # both with a cosine schedule
        ("multistep", "sgd"),  # any other multistep rule against tuned baselines
        ("multistep", "sgdm"),
        ("multistep", "nesterov"),
    ),
}
FAMILY_TITLES = {
    "primary": "the paper's claim: TM-SGD vs SGD, with and without the paper's warm-up",
    "momentum": "TM-SGD-M vs tuned SGD-M and Nesterov",
    "exploratory": "exploratory: cosine schedules and other three-step rules",
}
COMPARISONS: tuple[tuple[str, str], ...] = tuple(c for f in FAMILIES.values() for c in f)
FAMILY_OF: dict[tuple[str, str], str] = {c: f for f, cs in FAMILIES.items() for c in cs}

ALPHA = 0.05  # family-wise error rate, Holm's step-down within each family
TARGET_EFFECT = 1.6  # d_z (mean / sd of per-seed differences) the seed count must detect
TARGET_POWER = 0.8
MIN_SEEDS = 10

# Seeds. Validation (lr selection) and test seeds never overlap, and test seeds are fresh: none
# was a test seed of an earlier run (issue 25: the first full run's test seeds were 100-111 and
# its quick run's 100-102, so the quick run had seen three of the full run's test seeds). Quick
# and full test seeds are disjoint. A new run takes the next unused block.
USED_TEST_SEEDS = frozenset(range(100, 112))  # the committed runs of issue 15 (quick and full)
FULL_TEST_SEED_START = 200
QUICK_TEST_SEEDS = (300, 301, 302)
VALIDATION_SEEDS_FULL = (0, 1, 2)  # lr selection on 3 seeds (mean validation metric)
VALIDATION_SEEDS_QUICK = (0,)  # the quick run checks the pipeline; its verdicts are not read

# Divergence rule for lr selection, fixed before the runs: an lr is eligible only if it diverged
# on at most MAX_VALIDATION_DIVERGED of the validation seeds (a run diverges when its loss or
# metric is non-finite or its loss exceeds the training loop's DIVERGED_LOSS); among eligible
# lrs the best mean validation metric wins, ties to the smaller lr. With 0, a setting that
# diverges on any validation seed is never selected.
MAX_VALIDATION_DIVERGED = 0

# Configurations whose fine lr windows must cover each other's: the lr grid of a comparison's
# two sides spans both sides' best coarse lrs (issue 25: TM-SGD's grid never reached SGD's best
# lr on the keypoints). Momentum methods are matched at equal momentum.
COVER_SETS: tuple[tuple[str, ...], ...] = (
    ("sgd", "tmsgd", *GROUPS["tmsgd_warm"]),
    *((f"sgdm{m}", f"nesterov{m}", f"tmsgdm{m}") for m in _m),
)

# lr lattice: lr = 2 ** (e / 2), so neighbours differ by sqrt(2). Coarse stage: every 4th point.
COARSE_FAMILIES = ("sgd", "tmsgd", "sgdm0.9", "nesterov0.9", "tmsgdm0.9", "adam")
COARSE_E_FULL = {"sgd": (-16, -12, -8, -4, 0, 4), "adam": (-28, -24, -20, -16, -12)}
COARSE_E_QUICK = {"sgd": (-8, -2), "adam": (-18,)}
WINDOW_FULL = 1  # fine stage: anchors -1 .. +1 lattice points (lr / sqrt(2) .. lr * sqrt(2))
WINDOW_QUICK = 0


# Issue 25 item 2, the budget run, declared here before it is made. Only the primary and the
# momentum families (the exploratory rows are not rerun); every step budget times 4; lrs
# re-tuned at that budget on the covering windows, 3 validation seeds and the divergence rule
# above. Tasks, in the order they run: the three whose primary verdicts were significant at the
# 1x budget (keypoints, the generated CTR data, the GAN), then the LSTM (TM-SGD's largest
# positive estimate). The two real-data tasks are not rerun: neither separated any optimizer at
# 1x (digits about 99 % for every group, the Fair survey by hundredths of an AUC point), and no
# pip package found ships a larger real data set. Test seeds: a block no earlier run used (the
# 8-bit state study ran 400-411 through this loop). Holm within each family runs over every
# declared task: a task the run did not reach counts its comparisons with p = 1, so a family's
# size does not depend on how far the run got.
BUDGET_FAMILIES = ("primary", "momentum")
BUDGET_TASKS = ("keypoints", "ctr_widedeep", "gan2d", "lstm_seq")
BUDGET_STEPS_FACTOR = 4
BUDGET_TEST_SEED_START = 500
# Declared after the run above had started (so not one of its tasks) and before its own run: the
# real-data task issue 25 added (tasks/insteval.py; a validation-only pilot chose its target and
# steps), through the same budget protocol as a run of its own, with its own families (two
# comparisons each; Holm over both runs' primary comparisons is reported beside them). Test
# seeds 500-509 as above: fresh for this task, which no run had used.
BUDGET_NEW_TASKS = ("insteval",)


def groups_for(families: tuple[str, ...]) -> tuple[str, ...]:
    """The groups a run of ``families`` needs: every group (the Adam reference included) when
    all families run, else the groups their comparisons name."""
    if set(families) == set(FAMILIES):
        return tuple(GROUPS)
    named = {g for f in families for pair in FAMILIES[f] for g in pair}
    return tuple(g for g in GROUPS if g in named)


def members(group: str, task: str) -> tuple[str, ...]:
    """The configurations of ``group`` on ``task``."""
    paper = str(round(100 * PAPER_WARMUP[task]))
    return tuple(c.replace("{paper}", paper) for c in GROUPS[group])


def family_size(n_tasks: int, family: str | None = None) -> int:
    """Comparisons in ``family`` (None: in all families) over ``n_tasks`` tasks."""
    comps = COMPARISONS if family is None else FAMILIES[family]
    return n_tasks * len(comps)


def n_seeds(n_tasks: int, families: tuple[str, ...] = tuple(FAMILIES)) -> int:
    """Test seeds per cell: power TARGET_POWER against TARGET_EFFECT at Holm's strictest level
    in the largest of ``families``."""
    from experiments.stats import seeds_for_power

    largest = max(family_size(n_tasks, f) for f in families)
    return seeds_for_power(TARGET_EFFECT, ALPHA / largest, TARGET_POWER, MIN_SEEDS)


def full_test_seeds(n_tasks: int) -> tuple[int, ...]:
    return tuple(range(FULL_TEST_SEED_START, FULL_TEST_SEED_START + n_seeds(n_tasks)))


def budget_test_seeds() -> tuple[int, ...]:
    n = n_seeds(len(BUDGET_TASKS), BUDGET_FAMILIES)
    return tuple(range(BUDGET_TEST_SEED_START, BUDGET_TEST_SEED_START + n))
