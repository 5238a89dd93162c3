"""Markdown tables from analysed results: results, verdicts, paper claims, warm-up, stability."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .optimizers import LABELS, OPTIMIZERS
from .stats import verdict
from .tasks import get_task

# What the paper's text states for each category (Tables 3-5 and the GAN paragraph); the text
# gives no number for image classification or CTR.
PAPER_CLAIMS: dict[str, str] = {
    "digits_cnn": "CIFAR-10/100, VGG & ResNet: no number in the text",
    "keypoints": "YouTube Faces MSE: TM-SGD 0.1241, SGD 0.1306, Adam 0.132 "
    "(SGD-M better, unstated)",
    "gan2d": "Shoe GAN FID: TM-SGD 0.081, SGD 0.0925, SGD-M 0.0916, Adam 0.0553",
    "lstm_seq": "R8 accuracy: TM-SGD 90.9, SGD 90.6, SGD-M 90.4, Adam 90.1",
    "ctr_widedeep": "Avazu, Wide&Deep: no number in the text",
}


def _fmt(s: dict[str, Any] | None, digits: int = 2) -> str:
    if s is None:
        return "-"
    if s["n"] == 0:
        return f"diverged ({s['diverged']})"
    text = f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
    return text + (f" ({s['diverged']} diverged)" if s["diverged"] else "")


def _digits(task: str) -> int:
    return 3 if task in ("keypoints", "ctr_widedeep") else 2


def results_table(analysis: dict[str, Any], lrs: dict[str, dict[str, float]]) -> str:
    head = ["task (metric)"] + [LABELS[o] for o in OPTIMIZERS] + ["TM-SGD @ SGD's lr"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, summ in analysis["summaries"].items():
        t = get_task(task)
        arrow = "↑" if t.higher_is_better else "↓"
        cells = [f"{task} ({t.metric_name} {arrow})"]
        for o in OPTIMIZERS + ("tmsgd@sgd_lr",):
            s = summ.get(o)
            cells.append(f"{_fmt(s, _digits(task))}<br>lr {s['lr']:g}" if s else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_table(analysis: dict[str, Any]) -> str:
    lines = [
        "| task | comparison | test metric: difference of means | 2 × std. error | Welch p "
        "| verdict | final training loss: difference | 2 × std. error | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    train = analysis.get("train_verdicts", {})
    for task, vs in analysis["verdicts"].items():
        for name, v in vs.items():
            tv = train.get(task, {}).get(name)
            tcells = (f"{tv['diff']:+.2e} | {tv['two_se']:.2e} | {tv['verdict']}"
                      if tv else "- | - | -")
            lines.append(
                f"| {task} | {name} | {v['diff']:+.3f} | {v['two_se']:.3f} | {v['p']:.3f} "
                f"| **{v['verdict']}** | {tcells} |"
            )
    return "\n".join(lines)


def paper_table(analysis: dict[str, Any]) -> str:
    lines = [
        "| task (our stand-in) | the paper's claim | ours: SGD | ours: TM-SGD | TM-SGD vs SGD "
        "| TM-SGD-M vs SGD-M |",
        "|---|---|---|---|---|---|",
    ]
    for task, summ in analysis["summaries"].items():
        t = get_task(task)
        v = analysis["verdicts"].get(task, {})
        d = _digits(task)
        lines.append(
            f"| {task}: {t.category} | {PAPER_CLAIMS[task]} | {_fmt(summ.get('sgd'), d)} "
            f"| {_fmt(summ.get('tmsgd'), d)} | {v.get('tmsgd vs sgd', {}).get('verdict', '-')} "
            f"| {v.get('tmsgdm vs sgdm', {}).get('verdict', '-')} |"
        )
    return "\n".join(lines)


def switch_table(analysis: dict[str, Any], steps: dict[str, int]) -> str:
    lines = ["| task | switch_step (of steps) | TM-SGD test metric | vs SGD |", "|---|---|---|---|"]
    for task, summ in analysis["summaries"].items():
        keys = sorted((k for k in summ if k.startswith("tmsgd_switch")),
                      key=lambda k: int(k.removeprefix("tmsgd_switch")))
        if not keys:
            continue
        base = summ["sgd"]
        for k in ["tmsgd"] + keys:
            sw = 0 if k == "tmsgd" else int(k.removeprefix("tmsgd_switch"))
            v = verdict(task, summ[k], base)["verdict"]
            lines.append(f"| {task} | {sw} ({sw / steps[task]:.0%} of {steps[task]}) "
                         f"| {_fmt(summ[k], _digits(task))} | {v} |")
    return "\n".join(lines)


def stability_table(stability: list[dict[str, Any]]) -> str:
    quad = [r for r in stability if r["kind"] == "quadratic"]
    cnn = [r for r in stability if r["kind"] == "cnn"]
    lines = [
        "| optimizer | quadratic: theory max lr·L | quadratic: measured max lr·L "
        "| digits CNN max lr, loss stays finite | digits CNN max lr, loss ends below its start |",
        "|---|---|---|---|---|",
    ]
    for q in quad:
        cells = []
        for crit in ("finite", "trains"):
            lrs = [r["lr_max"] for r in cnn
                   if r["optimizer"] == q["optimizer"] and r.get("criterion", "trains") == crit]
            cells.append(f"{np.median(lrs):.3g} [{min(lrs):.3g}, {max(lrs):.3g}]"
                         if lrs and all(math.isfinite(x) for x in lrs) else "-")
        lines.append(f"| {LABELS[q['optimizer']]} | {q['theory_lrL']:.4f} "
                     f"| {q['measured_lrL']:.4f} | {cells[0]} | {cells[1]} |")
    lines.append("")
    lines.append("CNN cells: median [min, max] over seeds of the bisection result.")
    return "\n".join(lines)


def gan_extra_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| optimizer | modes covered (of 8) | high-quality fraction |", "|---|---|---|"]
    for opt in OPTIMIZERS:
        recs = [r for r in runs if r["spec"]["task"] == "gan2d" and r["spec"]["phase"] == "final"
                and r["spec"]["optimizer"] == opt and r["final_metric"] is not None]
        if recs:
            modes = [r["extra"]["modes"] for r in recs]
            hq = [r["extra"]["hq"] for r in recs]
            lines.append(f"| {LABELS[opt]} | {np.mean(modes):.1f} ± {np.std(modes, ddof=1):.1f} "
                         f"| {np.mean(hq):.2f} ± {np.std(hq, ddof=1):.2f} |")
    return "\n".join(lines)


def grid_table(runs: list[dict[str, Any]]) -> str:
    """Validation metric (mean over grid seeds) of every optimizer at every lr of the grid."""
    cells: dict[tuple[str, str], dict[float, list[float]]] = {}
    for r in runs:
        s = r["spec"]
        if s["phase"] == "grid":
            v = r["final_metric"]
            cells.setdefault((s["task"], s["optimizer"]), {}).setdefault(s["lr"], []).append(
                math.nan if v is None else v
            )
    lrs = sorted({lr for d in cells.values() for lr in d})
    lines = ["| task | optimizer | " + " | ".join(f"{lr:g}" for lr in lrs) + " |",
             "|---|---|" + "---|" * len(lrs)]
    for (task, opt), d in cells.items():
        row = []
        for lr in lrs:
            vals = d.get(lr)
            if vals is None:
                row.append("")
            else:
                mean = float(np.mean(vals))
                row.append("div." if math.isnan(mean) else f"{mean:.{_digits(task)}f}")
        lines.append(f"| {task} | {LABELS[opt]} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def summary_markdown(results: dict[str, Any]) -> str:
    """The whole summary page for one run of the protocol."""
    a, cfg = results["analysis"], results["config"]
    parts = [
        f"# Convergence experiments: {cfg['mode']} run",
        f"Generated by `python -m bench.convergence --{cfg['mode']}` in {results['wall_s']:.0f} s "
        f"on {results['machine']}. Seeds: grid {cfg['grid_seeds']}, final {cfg['final_seeds']}.",
        "## Test metric, mean ± std over seeds, at each optimizer's selected lr",
        results_table(a, results["selected_lr"]),
        "## Verdicts (ties = difference within 2 standard errors)",
        "Test metric in the task's direction; final training loss (mean over the last "
        "evaluation interval; GAN: generator loss, which says little) lower is better.",
        verdict_table(a),
        "## Beside the paper's claims",
        paper_table(a),
    ]
    if any(r["spec"]["task"] == "gan2d" for r in results["runs"]):
        parts += ["## GAN: mode coverage", gan_extra_table(results["runs"])]
    parts += ["## Warm-up (switch_step) study", switch_table(a, results["steps"])]
    if results.get("stability"):
        parts += ["## Largest stable learning rate", stability_table(results["stability"])]
    parts += [
        "## Learning-rate grid: validation metric (mean over grid seeds; div. = diverged)",
        grid_table(results["runs"]),
    ]
    return "\n\n".join(parts) + "\n"
