"""Figures: loss and metric curves (mean, band over seeds), lr sensitivity, warm-up, stability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .optimizers import LABELS, OPTIMIZERS  # noqa: E402
from .stability import SGD_FAMILY, spectral_radius  # noqa: E402
from .tasks import get_task  # noqa: E402

COLORS = {"sgd": "C0", "tmsgd": "C3", "sgdm": "C2", "tmsgdm": "C1", "adam": "C7"}


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
    ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2)


def curves(runs: list[dict[str, Any]], task: str, path: Path) -> None:
    t = get_task(task)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for opt in OPTIMIZERS:
        recs = [r for r in runs if r["spec"]["task"] == task and r["spec"]["phase"] == "final"
                and r["spec"]["optimizer"] == opt]
        if recs:
            label = f"{LABELS[opt]} lr={recs[0]['spec']['lr']:g}"
            _band(axes[0], recs, "train_loss", label, COLORS[opt])
            _band(axes[1], recs, "eval_metric", label, COLORS[opt])
    axes[0].set(title=f"{task}: training loss", xlabel="step", yscale="log")
    axes[1].set(title=f"{task}: {t.metric_name}", xlabel="step")
    if task in ("keypoints", "gan2d"):
        axes[1].set_yscale("log")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def lr_sensitivity(runs: list[dict[str, Any]], tasks: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for opt in OPTIMIZERS:
            pts: dict[float, list[float]] = {}
            for r in runs:
                s = r["spec"]
                if s["task"] == task and s["phase"] == "grid" and s["optimizer"] == opt:
                    v = r["final_metric"]
                    pts.setdefault(s["lr"], []).append(np.nan if v is None else v)
            lrs = sorted(pts)
            ax.plot(lrs, [np.mean(pts[lr]) for lr in lrs], "o-", color=COLORS[opt],
                    label=LABELS[opt])
        val_name = get_task(task).metric_name.replace("test", "val")
        ax.set(xscale="log", title=task, xlabel="lr", ylabel=val_name)
        if not get_task(task).higher_is_better:
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def switch_study(analysis: dict[str, Any], steps: dict[str, int], path: Path) -> None:
    tasks = [t for t, s in analysis["summaries"].items() if any("switch" in k for k in s)]
    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        summ = analysis["summaries"][task]
        keys = ["tmsgd"] + sorted((k for k in summ if k.startswith("tmsgd_switch")),
                                  key=lambda k: int(k.removeprefix("tmsgd_switch")))
        xs = [0 if k == "tmsgd" else int(k.removeprefix("tmsgd_switch")) / steps[task]
              for k in keys]
        ax.errorbar(xs, [summ[k]["mean"] for k in keys], [summ[k]["std"] for k in keys],
                    fmt="o-", color=COLORS["tmsgd"], label="TM-SGD", capsize=3)
        base = summ["sgd"]
        ax.axhline(base["mean"], color=COLORS["sgd"], label="SGD (mean)")
        ax.axhspan(base["mean"] - base["std"], base["mean"] + base["std"],
                   color=COLORS["sgd"], alpha=0.15)
        ax.set(title=task, xlabel="switch_step / steps", ylabel=get_task(task).metric_name)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def stability(stab: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    hs = np.linspace(0.01, 4.5, 400)
    for opt in SGD_FAMILY:
        ax.plot(hs, [spectral_radius(opt, h) for h in hs], color=COLORS[opt], label=LABELS[opt])
        for r in stab:
            if r["kind"] == "quadratic" and r["optimizer"] == opt:
                ax.axvline(r["measured_lrL"], color=COLORS[opt], ls=":", lw=1)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xlabel="lr · L", ylabel="spectral radius", ylim=(0.4, 1.6),
           title="quadratic: theory (lines), measured limit (dotted)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def all_plots(results: dict[str, Any], out: Path) -> list[str]:
    """Write every figure under ``out``; return their file names."""
    runs, tasks = results["runs"], list(results["selected_lr"])
    names = []
    for task in tasks:
        curves(runs, task, out / f"curves_{task}.png")
        names.append(f"curves_{task}.png")
    lr_sensitivity(runs, tasks, out / "lr_sensitivity.png")
    names.append("lr_sensitivity.png")
    if any(any("switch" in k for k in s) for s in results["analysis"]["summaries"].values()):
        switch_study(results["analysis"], results["steps"], out / "switch_study.png")
        names.append("switch_study.png")
    if results.get("stability"):
        stability(results["stability"], out / "stability.png")
        names.append("stability.png")
    return names
