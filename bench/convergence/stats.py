"""Summaries over seeds and the per-task verdicts (wins / ties within noise / loses)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .tasks import get_task

# (challenger, baseline, challenger's run group): groups are "<optimizer>" (at its own selected
# lr) or "<optimizer>@<baseline>_lr" (the paper's protocol: the baseline's lr).
COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("tmsgd", "sgd", "tmsgd"),
    ("tmsgdm", "sgdm", "tmsgdm"),
    ("tmsgd", "sgd", "tmsgd@sgd_lr"),
    ("tmsgdm", "sgdm", "tmsgdm@sgdm_lr"),
)


def groups(runs: list[dict[str, Any]], lrs: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Test-split runs grouped as task -> group name -> list of records."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for rec in runs:
        s = rec["spec"]
        task, opt = s["task"], s["optimizer"]
        g = out.setdefault(task, {})
        if s["phase"] == "final":
            g.setdefault(opt, []).append(rec)
            for tm, base in (("tmsgd", "sgd"), ("tmsgdm", "sgdm")):
                if opt == tm and lrs[task][base] == s["lr"]:
                    g.setdefault(f"{tm}@{base}_lr", []).append(rec)
        elif s["phase"] == "paper_lr":
            base = "sgd" if opt == "tmsgd" else "sgdm"
            g.setdefault(f"{opt}@{base}_lr", []).append(rec)
        elif s["phase"] == "switch":
            g.setdefault(f"{opt}_switch{s['switch_step']}", []).append(rec)
    return out


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample std and n of the final metric over seeds; diverged seeds are counted apart."""
    values = [r["final_metric"] for r in records if r["final_metric"] is not None]
    arr = np.asarray(values, dtype=float)
    # training loss over the last evaluation interval (GAN: the generator's loss)
    train = np.asarray([r["curves"]["train_loss"][-1] for r in records
                        if r["final_metric"] is not None], dtype=float)
    return {
        "lr": records[0]["spec"]["lr"],
        "n": len(values),
        "diverged": len(records) - len(values),
        "mean": float(arr.mean()) if len(arr) else math.nan,
        "std": float(arr.std(ddof=1)) if len(arr) > 1 else math.nan,
        "values": values,
        "train": {
            "n": len(train),
            "diverged": len(records) - len(train),
            "mean": float(train.mean()) if len(train) else math.nan,
            "std": float(train.std(ddof=1)) if len(train) > 1 else math.nan,
            "values": train.tolist(),
        },
    }


def verdict(
    task: str,
    challenger: dict[str, Any],
    baseline: dict[str, Any],
    higher_is_better: bool | None = None,
) -> dict[str, Any]:
    """Challenger against baseline: 'ties' when the difference of means is within two standard
    errors (sqrt(s1^2/n1 + s2^2/n2)), else 'wins' or 'loses' by the metric's direction (the
    task's metric unless ``higher_is_better`` is given)."""
    from scipy.stats import ttest_ind

    if higher_is_better is None:
        higher_is_better = get_task(task).higher_is_better
    sign = 1.0 if higher_is_better else -1.0
    diff = challenger["mean"] - baseline["mean"]
    if challenger["diverged"] or challenger["n"] < 2 or baseline["n"] < 2:
        if challenger["diverged"] > baseline["diverged"]:
            return {"diff": diff, "two_se": math.nan, "p": math.nan, "verdict": "loses (diverged)"}
        return {"diff": diff, "two_se": math.nan, "p": math.nan, "verdict": "n/a"}
    se = math.sqrt(challenger["std"] ** 2 / challenger["n"] + baseline["std"] ** 2 / baseline["n"])
    p = float(ttest_ind(challenger["values"], baseline["values"], equal_var=False).pvalue)
    if abs(diff) <= 2 * se or diff == 0:
        word = "ties"
    else:
        word = "wins" if sign * diff > 0 else "loses"
    return {"diff": diff, "two_se": 2 * se, "p": p, "verdict": word}


def analyse(results: dict[str, Any]) -> dict[str, Any]:
    """Summaries per task and group, and the verdicts of every comparison."""
    lrs = results["selected_lr"]
    grouped = groups(results["runs"], lrs)
    summaries = {t: {g: summarize(recs) for g, recs in gs.items()} for t, gs in grouped.items()}
    verdicts: dict[str, dict[str, Any]] = {}
    train_verdicts: dict[str, dict[str, Any]] = {}
    for task, summ in summaries.items():
        for _, base, group in COMPARISONS:
            if group in summ and base in summ:
                name = f"{group} vs {base}"
                verdicts.setdefault(task, {})[name] = verdict(task, summ[group], summ[base])
                train_verdicts.setdefault(task, {})[name] = verdict(
                    task, summ[group]["train"], summ[base]["train"], higher_is_better=False
                )
    return {"summaries": summaries, "verdicts": verdicts, "train_verdicts": train_verdicts}
