"""summary.md: selected rates, per-method results, the bound checks and the comparisons."""

from __future__ import annotations

import math
import statistics
from typing import Any

from .analysis import method_summary
from .tasks import TASKS


def _g(x: float) -> str:
    return "diverged" if not math.isfinite(x) else f"{x:.3g}"


def _med_range(vals: list[float]) -> str:
    fin = sorted(vals)
    return f"{_g(statistics.median(fin))} [{_g(fin[0])}, {_g(fin[-1])}]"


def summary_markdown(data: dict[str, Any]) -> str:
    """The generated summary of a run of the study."""
    cfg, tasks, an = data["config"], data["tasks"], data["analysis"]
    lines = [f"# Auxiliary-variable study: {cfg['name']} run (generated)", "",
             f"{cfg['steps']} full-batch steps per run, evaluation every {cfg['eval_every']}; "
             f"lr tuned on seeds {cfg['tune_seeds']}, reported on seeds {cfg['test_seeds']}. "
             f"Machine: {data['machine']}. Total time {data['elapsed_s'] / 60:.1f} min.", ""]
    for task, res in tasks.items():
        info = TASKS[task]
        lines += [f"## {task} ({info.kind}, depth {info.depth})", "",
                  f"Wall budget T = {an['time_budget'][task]:.2f} s. Loss: {info.loss_name} "
                  "(median [min, max] over test seeds). Bound: K*J checked at every "
                  "evaluation of every J run.", "",
                  "| method | lr | edge | final loss | loss at T | test error | wall [s] | "
                  "bound checks / violations |", "|---|---|---|---|---|---|---|---|"]
        for m, d in sorted(method_summary(res).items()):
            sel = res["selected"].get(m, {})
            edge = "yes" if sel.get("at_grid_edge") else ""
            bound = f"{d['checked']} / {d['violations']}" if d["checked"] else "n/a"
            lines.append(f"| {m} | {d['lr']:g} | {edge} | {_med_range(d['final'])} | "
                         f"{_med_range(d['at_T'])} | {_med_range(d['test'])} | "
                         f"{statistics.median(d['wall']):.2f} | {bound} |")
        lines.append("")
    lines += ["## Comparisons (declared in experiments/auxvar/analysis.py)", "",
              "d = log10(loss challenger) - log10(loss baseline) per seed; negative favours the "
              "challenger; ratio = 10^mean(d). p: paired t-test, Wilcoxon, and Holm-adjusted "
              f"t-test over the family of {an['family_size']} comparisons.", "",
              "A declared `best:` comparison can resolve to the same pair as another one; both "
              "stay in the family (which only makes Holm more conservative).", "",
              "| task | budget | declared | challenger | baseline | mean d [95% CI] | ratio | "
              "d_z | wins | p_t | p_W | p_Holm |", "|---" * 12 + "|"]
    for r in an["comparisons"]:
        lines.append(
            f"| {r['task']} | {r['budget']} | {r['declared']} | {r['challenger']} | "
            f"{r['baseline']} | "
            f"{r['mean_diff']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] | "
            f"{r['ratio']:.3g} | {r['d_z']:+.2f} | {r['wins']}/{r['n']} | {r['p_t']:.2g} | "
            f"{r['p_wilcoxon']:.2g} | {r['p_holm']:.2g} |")
    return "\n".join(lines) + "\n"
