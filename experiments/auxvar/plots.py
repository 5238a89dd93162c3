"""Figures: loss against gradient evaluations and against wall time, the bound beside the true
loss, the conditioning weight omega_1, and the final losses per seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .analysis import resolve  # noqa: E402
from .tasks import TASKS  # noqa: E402

COLORS = {"gd": "tab:blue", "adam": "tab:red", "tmsgd": "tab:green"}
STYLES = {"mse": "-", "adaptive": "--", "fixed": ":"}


def _style(method: str) -> dict[str, Any]:
    fam, opt = method.split("-")[0], method.split("-")[1]
    fam = "fixed" if fam.startswith("fixed") else fam
    return {"color": COLORS[opt], "linestyle": STYLES[fam]}


def _runs(res: dict[str, Any], method: str) -> list[dict[str, Any]]:
    return [r for r in res["test"] + res["ablation"] if r["spec"]["method"] == method]


def _curve_methods(res: dict[str, Any]) -> list[str]:
    main = [f"{f}-{o}" for f in ("mse", "adaptive") for o in ("gd", "adam", "tmsgd")]
    best_fixed = resolve("best:fixed", res["selected"])
    return main + ([best_fixed] if best_fixed else [])


def _band(ax, runs: list[dict[str, Any]], x_key: str, label: str, **style) -> None:
    """Median over seeds with the min-max band, on the common evaluation grid."""
    n = min(len(r["curves"]["loss"]) for r in runs)
    ys = np.array([r["curves"]["loss"][:n] for r in runs])
    xs = np.median(np.array([r["curves"][x_key][:n] for r in runs]), axis=0)
    ax.plot(xs, np.median(ys, axis=0), label=label, **style)
    ax.fill_between(xs, ys.min(axis=0), ys.max(axis=0), alpha=0.12, color=style["color"])


def curves(tasks: dict[str, Any], out: Path) -> list[Path]:
    """One figure per task: loss vs gradient evaluations (left) and vs wall time (right)."""
    paths = []
    for task, res in tasks.items():
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for m in _curve_methods(res):
            runs = _runs(res, m)
            if runs:
                for ax, key in zip(axes, ("step", "wall")):
                    _band(ax, runs, key, m, **_style(m))
        for ax, xl in zip(axes, ("gradient evaluations", "training wall time [s]")):
            ax.set_yscale("log")
            ax.set_xlabel(xl)
            ax.set_ylabel(TASKS[task].loss_name)
            ax.grid(alpha=0.3)
        axes[1].axvline(_t(res), color="k", lw=0.8, alpha=0.5)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{task}: median over seeds, min-max band (vertical line: wall budget T)")
        fig.tight_layout()
        paths.append(out / f"curves_{task}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def _t(res: dict[str, Any]) -> float:
    from .analysis import time_budget
    return time_budget(res["test"])


def bound(tasks: dict[str, Any], out: Path) -> Path:
    """True loss and K * J along the first test seed's adaptive runs, and omega_1."""
    fig, axes = plt.subplots(2, len(tasks), figsize=(4 * len(tasks), 6.5), squeeze=False)
    for col, (task, res) in enumerate(tasks.items()):
        ax, ax2 = axes[0, col], axes[1, col]
        seed = None
        for m in ("adaptive-gd", "adaptive-adam", "adaptive-tmsgd", "best:fixed"):
            m = resolve(m, res["selected"])
            runs = sorted(_runs(res, m), key=lambda r: r["spec"]["seed"]) if m else []
            if not runs:
                continue
            c, seed = runs[0]["curves"], runs[0]["spec"]["seed"]
            st = _style(m)
            ax.plot(c["step"], c["loss"], label=f"{m}: loss", **st)
            ax.plot(c["step"], c["bound"], alpha=0.5, lw=2.5, color=st["color"],
                    linestyle=st["linestyle"], label=f"{m}: K*J")
            ax2.plot(c["step"], c["omega1"], label=m, **st)
        ax.set_yscale("log")
        ax.set_title(f"{task}: loss and bound K*J (seed {seed})", fontsize=9)
        ax2.set_yscale("log")
        ax2.set_title("first adaptive weight omega_1", fontsize=9)
        ax2.set_xlabel("gradient evaluations")
        ax.grid(alpha=0.3)
        ax2.grid(alpha=0.3)
        if col == 0:
            ax.legend(fontsize=6)
            ax2.legend(fontsize=6)
    fig.tight_layout()
    path = out / "bound.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def finals(tasks: dict[str, Any], out: Path) -> Path:
    """Final loss of every test seed per method (log scale), one panel per task."""
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 4.5), squeeze=False)
    for ax, (task, res) in zip(axes[0], tasks.items()):
        methods = sorted({r["spec"]["method"] for r in res["test"] + res["ablation"]})
        for i, m in enumerate(methods):
            vals = [min(r["final_loss"], 1e6) for r in _runs(res, m)]
            ax.scatter([i] * len(vals), vals, s=12, color=_style(m.replace("-spectral", "")
                       .replace("-wgrad", "").replace("-alt", ""))["color"])
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=75, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(f"{task}: final {TASKS[task].loss_name}", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "finals.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def all_plots(tasks: dict[str, Any], out: Path) -> list[Path]:
    """Every figure of the finished tasks."""
    return curves(tasks, out) + [bound(tasks, out), finals(tasks, out)]
