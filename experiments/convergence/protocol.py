"""The protocol for one task: lr search on validation, then the test seeds.

1. Coarse: each base family (design.COARSE_FAMILIES) on a 4x-spaced lr lattice, validation
   seeds.
2. Fine: every configuration on a sqrt(2)-spaced window around anchors taken from stage 1
   (``anchors``), widened to cover the anchors of its cover set (design.COVER_SETS: both sides
   of a declared comparison search each other's best lrs); runs already made are reused. Every
   lr runs on all validation seeds and is scored by design's divergence rule (``score``). Each
   configuration's lr is its best-scoring one; each group is represented by its best
   configuration.
3. Test: every group's representative at its lr on the test seeds (fresh: never used for
   selection), the test split. Seed s is shared by all groups, which makes the comparisons paired.
"""

from __future__ import annotations

import math
from typing import Any

from .config import Config
from .design import COARSE_FAMILIES, COVER_SETS, MAX_VALIDATION_DIVERGED, groups_for, members
from .linear import Rule, stability_limit
from .optimizers import CONFIGS, OptConfig
from .pool import run_all
from .spec import RunSpec, execute
from .tasks import get_task

REFERENCE_M = 0.9  # momentum of the coarse-stage momentum families


def lr_of(e: int) -> float:
    return 2.0 ** (e / 2)


def steps_for(task: str, config: Config) -> int:
    t = get_task(task)
    return config.steps_factor * (t.steps_quick if config.quick else t.steps_full)


def score(values: list[float | None], higher_is_better: bool) -> float:
    """Mean validation metric over the seeds that did not diverge, oriented so that larger is
    better; -inf when more than MAX_VALIDATION_DIVERGED seeds diverged (not eligible)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite or len(values) - len(finite) > MAX_VALIDATION_DIVERGED:
        return -math.inf
    mean = sum(finite) / len(finite)
    return mean if higher_is_better else -mean


def _rule(cfg: OptConfig) -> Rule:
    return Rule(cfg.b[0], cfg.b[1], cfg.momentum, cfg.nesterov)


def anchors(name: str, best: dict[str, int]) -> list[int]:
    """Lattice exponents around which configuration ``name`` is searched, from the coarse
    stage's best exponent per family (``best``)."""
    cfg = CONFIGS[name]
    if name in best:
        return [best[name]]
    if cfg.rule == "multistep" and cfg.b == (0.5, -0.5):
        if cfg.momentum:  # TM-SGD-M at another momentum: equal effective lr lr / (1 - m)
            return [best["tmsgdm0.9"] + round(2 * math.log2((1 - cfg.momentum) / 0.1))]
        # warm-up and schedules: the optimum may sit at TM-SGD's lr or at SGD's
        return sorted({best["sgd"], best["tmsgd"]})
    if cfg.rule == "sgd" and cfg.momentum:
        family = "nesterov0.9" if cfg.nesterov else "sgdm0.9"
        return [best[family] + round(2 * math.log2((1 - cfg.momentum) / 0.1))]
    if cfg.rule == "sgd":  # SGD with a schedule
        return [best["sgd"]]
    # other multistep rules: SGD's lr divided by the rule's gain on a constant gradient, or
    # scaled by its stability limit relative to SGD's (2), whichever is smaller
    rule = _rule(cfg)
    factor = min(1.0 / rule.dc_gain(), stability_limit(rule) / 2.0)
    return [best["sgd"] + round(2 * math.log2(factor))]


def anchored_by(name: str) -> set[str]:
    """The coarse families whose best lr ``anchors`` reads for configuration ``name``."""
    cfg = CONFIGS[name]
    if name in COARSE_FAMILIES:
        return {name}
    if cfg.rule == "multistep" and cfg.b == (0.5, -0.5):
        return {"tmsgdm0.9"} if cfg.momentum else {"sgd", "tmsgd"}
    if cfg.rule == "sgd" and cfg.momentum:
        return {"nesterov0.9" if cfg.nesterov else "sgdm0.9"}
    return {"sgd"}


def window(points: list[int], half: int) -> list[int]:
    return list(range(min(points) - half, max(points) + half + 1))


def covered_anchors(names: list[str], best: dict[str, int]) -> dict[str, list[int]]:
    """Each configuration's anchors joined with those of the configurations it shares a cover
    set with (among ``names``), so a comparison's two sides search a common lr range."""
    own = {c: anchors(c, best) for c in names}
    out = {c: list(a) for c, a in own.items()}
    for cover in COVER_SETS:
        present = [c for c in cover if c in own]
        joined = sorted({e for c in present for e in own[c]})
        for c in present:
            out[c] = joined
    return out


class TaskRuns:
    """Every run of one task, keyed so that a run asked for twice is made once."""

    def __init__(self, task: str, steps: int, workers: int) -> None:
        self.task, self.steps, self.workers = task, steps, workers
        self.records: dict[tuple[str, int, int, str], dict[str, Any]] = {}

    def run(self, wanted: list[tuple[str, int, int, str, str]], label: str) -> None:
        """Make the runs (config, e, seed, split, phase) not made yet."""
        todo = [w for w in dict.fromkeys(wanted) if w[:4] not in self.records]
        specs = [RunSpec(self.task, c, lr_of(e), s, self.steps, split, phase)
                 for c, e, s, split, phase in todo]
        cost = 4.0 if self.task == "gan2d" else 1.0
        for w, rec in zip(todo, run_all(execute, specs, self.workers, lambda _: cost, label)):
            rec["e"] = w[1]
            self.records[w[:4]] = rec

    def val_scores(self, name: str) -> dict[int, float]:
        """Validation score of configuration ``name`` at each lattice exponent tried."""
        by_e: dict[int, list[float | None]] = {}
        for (c, e, _, split), rec in self.records.items():
            if c == name and split == "val":
                by_e.setdefault(e, []).append(rec["final_metric"])
        hib = get_task(self.task).higher_is_better
        return {e: score(v, hib) for e, v in sorted(by_e.items())}


def best_e(scores: dict[int, float]) -> int:
    """The exponent with the best score; ties go to the smaller lr."""
    return max(sorted(scores), key=lambda e: (scores[e], -e))


def edge_step(scores: dict[int, float]) -> int | None:
    """The lattice point beyond the best one when the best is at the edge of those tried."""
    e = best_e(scores)
    if e == max(scores) and math.isfinite(scores[e]):
        return e + 1
    if e == min(scores):
        return e - 1
    return None


def run_task(task: str, config: Config, workers: int) -> dict[str, Any]:
    """All three stages for ``task`` over the groups of ``config.families``; returns the
    selection and every run record."""
    runs = TaskRuns(task, steps_for(task, config), workers)
    names = sorted({c for g in groups_for(config.families) for c in members(g, task)})
    coarse = config.coarse_e
    val_seeds = config.grid_seeds
    families = [f for f in COARSE_FAMILIES if f in {a for c in names for a in anchored_by(c)}]
    runs.run([(f, e, s, "val", "coarse") for f in families
              for e in coarse["adam" if f == "adam" else "sgd"] for s in val_seeds], "coarse")
    best = {f: best_e(runs.val_scores(f)) for f in families}
    around = (covered_anchors(names, best) if config.cover_lrs
              else {c: anchors(c, best) for c in names})
    windows = {c: window(around[c], config.window) for c in names}
    runs.run([(c, e, s, "val", "grid") for c in names for e in windows[c] for s in val_seeds],
             "fine")
    for k in range(config.extend):
        beyond = [(c, e, s, "val", "grid") for c in names
                  if (e := edge_step(runs.val_scores(c))) is not None for s in val_seeds]
        if not beyond:
            break
        runs.run(beyond, f"extend {k + 1}")
    selected: dict[str, dict[str, Any]] = {}
    for group in groups_for(config.families):
        options = []
        for c in members(group, task):
            sc = runs.val_scores(c)
            e = best_e(sc)
            edge = e in (min(sc), max(sc))  # the best is the smallest or largest lr tried
            options.append({"config": c, "e": e, "lr": lr_of(e), "val_score": sc[e],
                            "at_window_edge": edge})
        pick = max(options, key=lambda o: o["val_score"])
        selected[group] = {**pick, "options": options}
    runs.run([(sel["config"], sel["e"], s, "test", "final") for sel in selected.values()
              for s in config.final_seeds], "test")
    return {
        "steps": runs.steps,
        "coarse_best_lr": {f: lr_of(e) for f, e in best.items()},
        "windows": {c: [lr_of(e) for e in w] for c, w in windows.items()},
        "selected": selected,
        "runs": list(runs.records.values()),
    }
