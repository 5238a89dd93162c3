"""The comparisons, declared here before any run, and their analysis.

Score of a run: log10 of its final true loss (train MSE, or the PINN loss), diverged = 1e6.
Two budgets: equal gradient evaluations (the final step: every method takes one full-batch
gradient per step) and equal wall time (the loss logged last before T, T = the smallest median
training time among the main methods of that task). Holm's correction runs over every
comparison of the run, all tasks and both budgets together, on the paired t-test p-values.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from .stats import holm, paired, score

# (challenger, baseline, question). "best:<prefix>" = the method with that prefix whose
# tuning-seed score was lowest (chosen on the tuning seed, tested on fresh seeds).
COMPARISONS = (
    ("adaptive-gd", "mse-gd", "adaptive J vs original loss, GD"),
    ("adaptive-adam", "mse-adam", "adaptive J vs original loss, Adam"),
    ("adaptive-tmsgd", "mse-tmsgd", "adaptive J vs original loss, TM-SGD"),
    ("best:adaptive", "best:mse", "best adaptive-J method vs best original-loss method"),
    ("best:fixed", "best:adaptive", "best fixed-penalty method vs best adaptive-J method"),
)
ABLATION_COMPARISONS = (
    ("adaptive-adam-wgrad", "adaptive-adam", "gradient through omega vs omega held fixed"),
    ("adaptive-adam-spectral", "adaptive-adam", "spectral vs Frobenius norms in omega"),
    ("adaptive-adam-alt", "adaptive-adam", "alternating z / theta steps vs joint steps"),
)
BUDGETS = ("evals", "wall")


def resolve(name: str, selected: dict[str, dict[str, Any]]) -> str | None:
    """Turn ``best:<prefix>`` into the method of that family chosen on the tuning seed (None
    when the family was not run)."""
    if not name.startswith("best:"):
        return name
    prefix = name[len("best:"):]
    family = [m for m in selected if m.startswith(prefix)]
    return min(family, key=lambda m: selected[m]["score"]) if family else None


def loss_at_time(rec: dict[str, Any], t: float) -> float:
    """The true loss logged last at or before training time t (inf if it diverged before)."""
    c = rec["curves"]
    value = c["loss"][0]
    for w, loss in zip(c["wall"], c["loss"]):
        if w > t:
            break
        value = loss
    if rec["diverged"] and c["wall"][-1] <= t:
        return math.inf
    return value


def time_budget(test: list[dict[str, Any]]) -> float:
    """T: the smallest median training time among the methods of a task."""
    by: dict[str, list[float]] = {}
    for r in test:
        by.setdefault(r["spec"]["method"], []).append(r["wall"])
    return min(statistics.median(v) for v in by.values())


def _scores(runs: list[dict[str, Any]], method: str, budget: str, t: float) -> list[float]:
    recs = sorted((r for r in runs if r["spec"]["method"] == method),
                  key=lambda r: r["spec"]["seed"])
    if budget == "evals":
        return [score(r["final_loss"]) for r in recs]
    return [score(loss_at_time(r, t)) for r in recs]


def analyse(tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every declared comparison on every finished task, both budgets, Holm-adjusted."""
    rows: list[dict[str, Any]] = []
    budgets = {}
    for task, res in tasks.items():
        t = time_budget(res["test"])
        budgets[task] = t
        runs = res["test"] + res["ablation"]
        present = {r["spec"]["method"] for r in runs}
        for ch, base, question in COMPARISONS + ABLATION_COMPARISONS:
            a, b = resolve(ch, res["selected"]), resolve(base, res["selected"])
            if a not in present or b not in present:
                continue
            for budget in BUDGETS:
                row = paired(_scores(runs, a, budget, t), _scores(runs, b, budget, t))
                rows.append({"task": task, "challenger": a, "baseline": b, "declared": f"{ch} "
                             f"vs {base}", "question": question, "budget": budget, **row})
    for row, p in zip(rows, holm([r["p_t"] for r in rows])):
        row["p_holm"] = p
    return {"comparisons": rows, "time_budget": budgets, "family_size": len(rows)}


def method_summary(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per method: selected lr, median and range of the final loss, test error, wall time,
    bound checks and violations over the test (and ablation) runs."""
    out = {}
    t = time_budget(res["test"])
    for r in res["test"] + res["ablation"]:
        m = r["spec"]["method"]
        d = out.setdefault(m, {"lr": r["spec"]["lr"], "final": [], "at_T": [], "test": [],
                               "wall": [], "diverged": 0, "checked": 0, "violations": 0})
        d["final"].append(r["final_loss"])
        d["at_T"].append(loss_at_time(r, t))
        d["test"].append(r["test_error"])
        d["wall"].append(r["wall"])
        d["diverged"] += int(r["diverged"])
        d["checked"] += r["bound_checked"]
        d["violations"] += r["bound_violations"]
    return out
