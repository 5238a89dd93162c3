"""Test-seed summaries and the declared paired comparisons with Holm's correction.

For a comparison on a task the unit is the seed: challenger and baseline ran with the same seed
(same initialization and batch order), and the difference is oriented so that positive means the
challenger is better. A seed where either run diverged leaves the paired tests; the number of
such seeds is reported, and a side that diverged on more than a quarter of the seeds gets the
verdict "diverges" whatever the rest say. Holm's correction runs within each declared family
(design.FAMILIES); Holm over all comparisons is kept as a sensitivity line. A run declares its
families and tasks; a declared task it did not reach counts its comparisons with p = 1, so the
correction is as strict as the declaration whatever happened to the run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from experiments.stats import compare_paired, holm

from .design import ALPHA, FAMILIES, FAMILY_OF
from .tasks import get_task


def by_seed(task_result: dict[str, Any], group: str) -> dict[int, float | None]:
    """Test metric per seed of ``group``'s selected configuration (None: diverged)."""
    sel = task_result["selected"][group]
    return {
        r["spec"]["seed"]: r["final_metric"]
        for r in task_result["runs"]
        if r["spec"]["phase"] == "final" and r["spec"]["optimizer"] == sel["config"]
        and r["e"] == sel["e"]
    }


def summary(values: dict[int, float | None]) -> dict[str, Any]:
    ok = np.asarray([v for v in values.values() if v is not None], dtype=float)
    return {
        "n": len(ok),
        "diverged": len(values) - len(ok),
        "mean": float(ok.mean()) if len(ok) else math.nan,
        "std": float(ok.std(ddof=1)) if len(ok) > 1 else math.nan,
    }


def paired(task: str, challenger: dict[int, float | None],
           baseline: dict[int, float | None]) -> dict[str, Any]:
    """Statistics of one comparison (before correction)."""
    sign = 1.0 if get_task(task).higher_is_better else -1.0
    seeds = sorted(set(challenger) & set(baseline))
    both = [s for s in seeds if challenger[s] is not None and baseline[s] is not None]
    diffs = [sign * (challenger[s] - baseline[s]) for s in both]  # type: ignore[operator]
    out: dict[str, Any] = {
        "seeds": seeds,
        "diffs": diffs,
        "diverged_challenger": sum(challenger[s] is None for s in seeds),
        "diverged_baseline": sum(baseline[s] is None for s in seeds),
    }
    if len(diffs) >= 2:
        out.update(compare_paired(diffs).as_dict())
    else:
        out.update({"n": len(diffs), "p_t": math.nan})
    return out


def verdict(c: dict[str, Any], p_key: str = "p_holm") -> str:
    """The verdict of comparison ``c`` from its adjusted p ``p_key`` (within its family by
    default; "p_holm_all" for the sensitivity line over every comparison)."""
    n_seeds = len(c["seeds"])
    if c["diverged_challenger"] > n_seeds / 4 and c["diverged_challenger"] > c["diverged_baseline"]:
        return "worse (diverges)"
    if c["diverged_baseline"] > n_seeds / 4 and c["diverged_baseline"] > c["diverged_challenger"]:
        return "better (baseline diverges)"
    p = c.get(p_key, math.nan)
    if math.isnan(p) or p >= ALPHA:
        return "no significant difference"
    return "better" if c["mean_diff"] > 0 else "worse"


def _holm_padded(pvalues: list[float], missing: int) -> list[float]:
    """Holm-adjusted ``pvalues`` as if ``missing`` more comparisons had p = 1."""
    return holm(pvalues + [1.0] * missing)[: len(pvalues)]


def analyse(tasks: dict[str, dict[str, Any]], families: tuple[str, ...] = tuple(FAMILIES),
            declared_tasks: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Summaries per task and group; every comparison of ``families`` with Holm-adjusted
    p-values within its family (``p_holm``, ``verdict``) and over all of them (``p_holm_all``,
    ``verdict_all``: the sensitivity line).

    A family is its comparisons on every declared task (None: the tasks run); those of a
    declared task missing from ``tasks`` count with p = 1. ``family_sizes`` are the declared
    sizes, ``family_run`` how many of them ran, so a partial run is visible."""
    declared = tuple(tasks) if declared_tasks is None else tuple(declared_tasks)
    if not set(tasks) <= set(declared):
        raise ValueError(f"tasks {sorted(set(tasks) - set(declared))} were not declared")
    missing = len(declared) - len(tasks)
    summaries = {t: {g: summary(by_seed(res, g)) | {"config": res["selected"][g]["config"],
                                                     "lr": res["selected"][g]["lr"]}
                     for g in res["selected"]} for t, res in tasks.items()}
    comps: list[dict[str, Any]] = []
    for task, res in tasks.items():
        for challenger, baseline in (c for f in families for c in FAMILIES[f]):
            c = paired(task, by_seed(res, challenger), by_seed(res, baseline))
            comps.append({"task": task, "challenger": challenger, "baseline": baseline,
                          "family": FAMILY_OF[(challenger, baseline)],
                          "challenger_config": res["selected"][challenger]["config"],
                          "baseline_config": res["selected"][baseline]["config"], **c})
    per_task = sum(len(FAMILIES[f]) for f in families)
    for c, p in zip(comps, _holm_padded([c["p_t"] for c in comps], missing * per_task)):
        c["p_holm_all"] = p
        c["verdict_all"] = verdict(c, "p_holm_all")
    sizes, ran = {}, {}
    for family in families:
        members = [c for c in comps if c["family"] == family]
        sizes[family] = len(declared) * len(FAMILIES[family])
        ran[family] = len(members)
        adjusted = _holm_padded([c["p_t"] for c in members], missing * len(FAMILIES[family]))
        for c, p in zip(members, adjusted):
            c["p_holm"] = p
            c["verdict"] = verdict(c)
    order = list(families)
    comps.sort(key=lambda c: order.index(c["family"]))  # stable: task order kept within
    return {"summaries": summaries, "comparisons": comps, "alpha": ALPHA,
            "families": list(families), "declared_tasks": list(declared),
            "family_sizes": sizes, "family_run": ran}
