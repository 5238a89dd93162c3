"""Markdown tables of one run of the protocol: verdicts, test metrics, lr selection, lr curves."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .design import FAMILY_TITLES, TARGET_EFFECT, TARGET_POWER, n_seeds
from .optimizers import LABELS
from .tasks import get_task


def _digits(task: str) -> int:
    return 3 if task == "keypoints" else 2


def _num(x: float, digits: int) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(p: float) -> str:
    if p is None or math.isnan(p):
        return "-"
    return f"{p:.2g}" if p < 0.01 else f"{p:.3f}"


def verdict_table(analysis: dict[str, Any], family: str) -> str:
    """The comparisons of ``family``: verdict from Holm within the family; the last two columns
    are the sensitivity line (Holm over every comparison run)."""
    n_all = sum(analysis["family_sizes"].values())
    lines = [
        "| task | comparison | configurations (lr) | challenger better on | mean difference "
        "[95% bootstrap CI] | d_z | p (paired t) | p (Wilcoxon) | p (Holm, family) | verdict "
        f"| p (Holm, all {n_all}) | verdict (all {n_all}) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summ = analysis["summaries"]
    for c in analysis["comparisons"]:
        if c["family"] != family:
            continue
        t, d = c["task"], _digits(c["task"])
        sc, sb = summ[t][c["challenger"]], summ[t][c["baseline"]]
        div = ""
        if c["diverged_challenger"] or c["diverged_baseline"]:
            div = f" ({c['diverged_challenger']}/{c['diverged_baseline']} diverged)"
        n = c.get("n", 0)
        diff = (f"{c['mean_diff']:+.{d}f} [{c['ci_low']:+.{d}f}, {c['ci_high']:+.{d}f}]"
                if n >= 2 else "-")
        lines.append(
            f"| {t} | {LABELS[c['challenger']]} vs {LABELS[c['baseline']]} "
            f"| {sc['config']} ({sc['lr']:.3g}) vs {sb['config']} ({sb['lr']:.3g}) "
            f"| {c.get('wins', '-')}/{n}{div} | {diff} | {_num(c.get('effect_dz'), 2)} "
            f"| {_p(c['p_t'])} | {_p(c.get('p_wilcoxon'))} | {_p(c['p_holm'])} "
            f"| **{c['verdict']}** | {_p(c['p_holm_all'])} | {c['verdict_all']} |"
        )
    return "\n".join(lines)


def family_counts(analysis: dict[str, Any], family: str, key: str = "verdict") -> str:
    """One line: how many comparisons of ``family`` got each verdict (``key``), with tasks."""
    by: dict[str, list[str]] = {}
    for c in analysis["comparisons"]:
        if c["family"] == family:
            by.setdefault(c[key], []).append(
                f"{c['task']} {LABELS[c['challenger']]} vs {LABELS[c['baseline']]}")
    parts = []
    for v in sorted(by, key=lambda v: (v == "no significant difference", v)):
        rows = by[v]
        named = "" if v == "no significant difference" else ": " + "; ".join(rows)
        parts.append(f"{v} {len(rows)}{named}")
    return ", ".join(parts)


def metric_table(analysis: dict[str, Any]) -> str:
    groups = list(next(iter(analysis["summaries"].values())))
    lines = ["| task (metric) | " + " | ".join(LABELS[g] for g in groups) + " |",
             "|---|" + "---|" * len(groups)]
    for task, summ in analysis["summaries"].items():
        t, d = get_task(task), _digits(task)
        cells = [f"{task} ({t.metric_name} {'↑' if t.higher_is_better else '↓'})"]
        for g in groups:
            s = summ[g]
            text = f"{_num(s['mean'], d)} ± {_num(s['std'], d)}"
            if s["diverged"]:
                text += f" ({s['diverged']} div.)"
            cells.append(f"{text}<br>{s['config']} @ {s['lr']:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_table(tasks: dict[str, Any]) -> str:
    lines = ["| task | group | configuration: best lr (validation score), * = best at the "
             "edge of the lrs tried |", "|---|---|---|"]
    for task, res in tasks.items():
        d = _digits(task)
        sign = 1.0 if get_task(task).higher_is_better else -1.0
        for group, sel in res["selected"].items():
            opts = "; ".join(
                f"{'**' if o['config'] == sel['config'] else ''}{o['config']}: {o['lr']:.3g} "
                f"({_num(sign * o['val_score'], d)}){'*' if o['at_window_edge'] else ''}"
                f"{'**' if o['config'] == sel['config'] else ''}"
                for o in sel["options"]
            )
            lines.append(f"| {task} | {LABELS[group]} | {opts} |")
    return "\n".join(lines)


def lr_curve_table(task: str, res: dict[str, Any]) -> str:
    """Validation metric of every configuration at every lr tried (div. = diverged)."""
    cells: dict[str, dict[int, list[float]]] = {}
    for r in res["runs"]:
        if r["spec"]["split"] == "val":
            v = r["final_metric"]
            cells.setdefault(r["spec"]["optimizer"], {}).setdefault(r["e"], []).append(
                math.nan if v is None else v)
    es = sorted({e for d in cells.values() for e in d})
    d = _digits(task)
    lines = ["| configuration | " + " | ".join(f"{2 ** (e / 2):.3g}" for e in es) + " |",
             "|---|" + "---|" * len(es)]
    for name in sorted(cells):
        row = []
        for e in es:
            vals = cells[name].get(e)
            if vals is None:
                row.append("")
            else:
                mean = float(np.mean(vals))
                row.append("div." if math.isnan(mean) else f"{mean:.{d}f}")
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def gan_table(res: dict[str, Any]) -> str:
    lines = ["| group (configuration) | modes covered (of 8) | high-quality fraction |",
             "|---|---|---|"]
    for group, sel in res["selected"].items():
        recs = [r for r in res["runs"] if r["spec"]["phase"] == "final"
                and r["spec"]["optimizer"] == sel["config"] and r["e"] == sel["e"]
                and r["final_metric"] is not None]
        if len(recs) > 1:
            modes = [r["extra"]["modes"] for r in recs]
            hq = [r["extra"]["hq"] for r in recs]
            lines.append(f"| {LABELS[group]} ({sel['config']}) | {np.mean(modes):.1f} ± "
                         f"{np.std(modes, ddof=1):.1f} | {np.mean(hq):.2f} ± "
                         f"{np.std(hq, ddof=1):.2f} |")
    return "\n".join(lines)


def summary_markdown(results: dict[str, Any]) -> str:
    """The generated summary page of one run."""
    a, cfg, tasks = results["analysis"], results["config"], results["tasks"]
    families, declared = a["families"], a["declared_tasks"]
    n_all, n_run = sum(a["family_sizes"].values()), len(a["comparisons"])
    steps = cfg.get("steps_factor", 1)  # runs made before the option existed lack it
    factor = f" (steps x{steps})" if steps != 1 else ""
    # runs made before the command was recorded were all made by --<mode> [--steps-factor N]
    command = results.get(
        "command", f"--{cfg['mode']}" + (f" --steps-factor {steps}" if steps != 1 else ""))
    sizes = ", ".join(f"{f} {a['family_sizes'][f]}" for f in families)
    not_run = [t for t in declared if t not in tasks]
    parts = [
        f"# Convergence experiments: {cfg['mode']} run{factor}",
        f"Generated by `python -m experiments.convergence {command}` in "
        f"{results['wall_s']:.0f} s on {results['machine']}. lr search seeds "
        f"{list(cfg['grid_seeds'])} (validation split); test seeds {list(cfg['final_seeds'])} "
        f"(test split, paired across groups). Comparisons in {len(families)} declared "
        f"families ({sizes} over the {len(declared)} declared tasks); Holm's correction "
        f"within each family, and over all {n_all} as a sensitivity line. "
        + (f"Declared tasks not run, their comparisons counted with p = 1: {not_run}. "
           if not_run else "")
        + f"The design's seed count for these families, "
        f"{n_seeds(len(declared), tuple(families))}, gives {TARGET_POWER:.0%} power for d_z = "
        f"{TARGET_EFFECT} at Holm's strictest level in the largest family.",
        f"## Verdicts ({n_run} of {n_all} declared comparisons run; Holm within each family "
        f"at alpha {a['alpha']})",
        "Differences are challenger minus baseline in the direction of the metric (positive = "
        "challenger better), per seed; the verdict uses the paired t-test with Holm's "
        "correction within the family; the last two columns correct over every comparison "
        "run instead.",
    ]
    for family in families:
        parts += [
            f"### Family '{family}': {FAMILY_TITLES[family]} "
            f"({a['family_run'][family]} of {a['family_sizes'][family]} comparisons run)",
            f"Within the family: {family_counts(a, family)}. "
            f"Holm over all {n_all}: {family_counts(a, family, 'verdict_all')}.",
            verdict_table(a, family),
        ]
    parts += [
        "## Test metric per group (mean ± std over the test seeds; representative "
        "configuration @ lr)",
        metric_table(a),
        "## lr and configuration selection (validation)",
        selection_table(tasks),
    ]
    if "gan2d" in tasks:
        parts += ["## GAN: mode coverage on the test seeds", gan_table(tasks["gan2d"])]
    for task, res in tasks.items():
        parts += [f"## Validation metric against lr: {task} ({res['steps']} steps)",
                  lr_curve_table(task, res)]
    return "\n\n".join(parts) + "\n"
