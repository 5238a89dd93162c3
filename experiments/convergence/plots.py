"""Figures: training curves per task, validation metric against lr, paired differences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .optimizers import LABELS  # noqa: E402
from .tasks import get_task  # noqa: E402

CURVE_GROUPS = ("sgd", "sgdm", "nesterov", "adam", "tmsgd", "tmsgdm", "multistep")
COLORS = {"sgd": "C0", "sgdm": "C2", "nesterov": "C4", "adam": "C7", "tmsgd": "C3",
          "tmsgdm": "C1", "multistep": "C5"}


def _band(ax: Any, recs: list[dict[str, Any]], key: str, label: str, color: str) -> None:
    recs = [r for r in recs if not r["diverged"]]
    if not recs:
        return
    steps = np.asarray(recs[0]["curves"]["step"])
    vals = np.asarray([r["curves"][key] for r in recs], dtype=float)
    if key == "train_loss":  # step 0 holds the initial loss (GAN: nan)
        steps, vals = steps[1:], vals[:, 1:]
    mean, std = vals.mean(0), vals.std(0)
    ax.plot(steps, mean, color=color, label=f"{label} (n={len(recs)})")
    ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.15)


def curves(task: str, res: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for g in (g for g in CURVE_GROUPS if g in res["selected"]):
        sel = res["selected"][g]
        recs = [r for r in res["runs"] if r["spec"]["phase"] == "final"
                and r["spec"]["optimizer"] == sel["config"] and r["e"] == sel["e"]]
        label = f"{LABELS[g]}: {sel['config']} lr={sel['lr']:.3g}"
        _band(axes[0], recs, "train_loss", label, COLORS[g])
        _band(axes[1], recs, "eval_metric", label, COLORS[g])
    t = get_task(task)
    axes[0].set(title=f"{task}: training loss", xlabel="step", yscale="log")
    axes[1].set(title=f"{task}: {t.metric_name}", xlabel="step")
    if not t.higher_is_better:
        axes[1].set_yscale("log")
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def lr_sensitivity(tasks: dict[str, Any], path: Path) -> None:
    """Validation metric against lr for the main configuration of each base group."""
    names = {"sgd": "sgd", "sgdm": "sgdm0.9", "nesterov": "nesterov0.9", "adam": "adam",
             "tmsgd": "tmsgd", "tmsgdm": "tmsgdm0.9"}
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.4), squeeze=False)
    for ax, (task, res) in zip(axes[0], tasks.items()):
        for g, name in names.items():
            pts: dict[float, list[float]] = {}
            for r in res["runs"]:
                if r["spec"]["split"] == "val" and r["spec"]["optimizer"] == name:
                    v = r["final_metric"]
                    pts.setdefault(r["spec"]["lr"], []).append(np.nan if v is None else v)
            if not pts:  # a group this run did not search
                continue
            lrs = sorted(pts)
            ax.plot(lrs, [np.mean(pts[x]) for x in lrs], "o-", ms=3, color=COLORS[g],
                    label=LABELS[g] + ("" if name == g else f" {name[len(g):]}"))
        t = get_task(task)
        ax.set(xscale="log", title=task, xlabel="lr", ylabel=t.metric_name.replace("test", "val"))
        if not t.higher_is_better:
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def forest(analysis: dict[str, Any], path: Path) -> None:
    """Mean paired difference with its bootstrap interval, in units of the differences' sd
    (so the dot is d_z), clipped to +-6."""
    comps = [c for c in analysis["comparisons"] if c.get("n", 0) >= 2]
    if not comps:
        return
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(comps) + 1))
    for i, c in enumerate(comps):
        scale = float(np.std(c["diffs"], ddof=1)) or 1.0
        lo, mid, hi = (np.clip(x / scale, -6, 6) for x in (c["ci_low"], c["mean_diff"],
                                                          c["ci_high"]))
        color = {"better": "C2", "worse": "C3"}.get(c["verdict"].split()[0], "0.4")
        ax.plot([lo, hi], [i, i], color=color)
        ax.plot([mid], [i], "o", color=color, ms=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(comps)))
    ax.set_yticklabels([f"{c['task']}: {LABELS[c['challenger']]} vs {LABELS[c['baseline']]}"
                        for c in comps], fontsize=6)
    ax.invert_yaxis()
    ax.set(xlim=(-6.3, 6.3),
           xlabel="paired difference / sd of the differences (positive: challenger better)",
           title="95% bootstrap intervals; green/red: Holm-significant")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def all_plots(results: dict[str, Any], out: Path) -> list[str]:
    """Write every figure under ``out``; return their file names."""
    names = []
    for task, res in results["tasks"].items():
        curves(task, res, out / f"curves_{task}.png")
        names.append(f"curves_{task}.png")
    lr_sensitivity(results["tasks"], out / "lr_sensitivity.png")
    forest(results["analysis"], out / "paired_differences.png")
    return names + ["lr_sensitivity.png", "paired_differences.png"]
