"""The solver study's protocol, analysis and report (design in solver_design.py).

    python -m experiments.auxvar.solver_study --quick    # pipeline check, about a minute
    python -m experiments.auxvar.solver_study --full     # the reported run
    python -m experiments.auxvar.solver_study --full --report-only   # redraw from runs.json
    python -m experiments.auxvar.solver_study --pinn     # the PINN family (--pinn-quick: check)
    python -m experiments.auxvar.solver_study --long --workers 2   # the long-budget family

1. Tuning: every setting of every method's grid on the tuning seeds at the full budget; the
   divergence rule and the selection of solver_design (a size without tuning seeds, the long
   one, takes the settings the SELECTED_FROM run selected). 2. Test: each method at its
   selected setting on the test seeds. Runs go one after another (one thread each), so that
   wall times compare; with --workers N, N processes each run one seed's methods one after
   another, so the methods of a seed run under the same load. runs.json and summary.md are
   rewritten after each task.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from itertools import repeat
from pathlib import Path
from typing import Any

import torch

from .solver_design import (
    ALPHA,
    BASELINES,
    CHALLENGER,
    FAMILIES,
    GRIDS,
    GRIDS_OF,
    SELECTED_FROM,
    SIZES,
    Size,
)
from .solver_runs import SolverRun, execute, mapped
from .stats import holm, paired, score
from .tasks import TASKS

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "auxvar"
METHODS = (CHALLENGER, *BASELINES)
# The regression full run, whose rows join the PINN family's in the union sensitivity line
REGRESSION_RUN = DEFAULT_OUT / "solvers-full" / "runs.json"
LOSS_LABEL = {"regression": "MSE", "pinn": "PINN loss"}  # by tasks.TaskInfo.kind


def _slim(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != "curves"}


def select(tune: list[dict[str, Any]], method: str,
           grids: dict[str, tuple[float, ...]] = GRIDS) -> dict[str, Any]:
    """The setting of ``method`` with the lowest mean score over the tuning seeds among those
    that diverged on none (ties: the first in the grid); None if every setting diverged."""
    table = {}
    for setting in grids[method]:
        recs = [r for r in tune if r["spec"]["method"] == method
                and r["spec"]["setting"] == setting]
        eligible = not any(r["diverged"] for r in recs)
        table[setting] = (statistics.fmean(score(r["final_mse"]) for r in recs)
                          if eligible else math.inf)
    best = min(grids[method], key=lambda s: table[s])
    return {"setting": best if math.isfinite(table[best]) else None,
            "scores": {f"{s:g}": v for s, v in table.items()},
            "at_grid_edge": len(grids[method]) > 1 and best in (grids[method][0],
                                                                 grids[method][-1])}


def selections_of(run: str, task: str) -> dict[str, Any]:
    """What a committed run (a folder under docs/auxvar) selected for ``task``."""
    return json.loads((DEFAULT_OUT / run / "runs.json").read_text())["tasks"][task]["selected"]


def seed_block(task: str, settings: dict[str, float | None], seed: int,
               size: Size) -> list[dict[str, Any]]:
    """Every method with a setting at one test seed, one after another."""
    return [execute(SolverRun(task, m, settings[m], seed, size.evals, size.checkpoints, "test"))
            for m in METHODS if settings[m] is not None]


def run_task(task: str, size: Size, log: Any = print, workers: int = 1) -> dict[str, Any]:
    grids = GRIDS_OF[size.family]
    tune = []
    if size.tune_seeds:
        for method in METHODS:
            for setting in grids[method]:
                for seed in size.tune_seeds:
                    tune.append(_slim(execute(SolverRun(task, method, setting, seed, size.evals,
                                                        size.checkpoints, "tune"))))
            log(f"  {task} {method}: tuned")
        selected = {m: select(tune, m, grids) for m in METHODS}
    else:
        selected = selections_of(SELECTED_FROM, task)
    settings = {m: selected[m]["setting"] for m in METHODS}
    blocks = mapped(seed_block, repeat(task), repeat(settings), size.test_seeds, repeat(size),
                    workers=workers)
    return {"selected": selected, "tune": tune, "test": [r for b in blocks for r in b]}


def mse_at_time(rec: dict[str, Any], t: float) -> float:
    """The MSE logged last at or before training time t (inf if the run diverged by then)."""
    c = rec["curves"]
    value = c["mse"][0]
    for w, v in zip(c["wall"], c["mse"]):
        if w > t:
            break
        value = v
    if rec["diverged"] and rec["wall"] <= t:
        return math.inf
    return value


def time_budget(test: list[dict[str, Any]]) -> float:
    """T: the smallest median training time among the methods (all spent the same FLOPs)."""
    by: dict[str, list[float]] = {}
    for r in test:
        by.setdefault(r["spec"]["method"], []).append(r["wall"])
    return min(statistics.median(v) for v in by.values())


def _scores(test: list[dict[str, Any]], method: str, budget: str, t: float) -> list[float]:
    recs = sorted((r for r in test if r["spec"]["method"] == method),
                  key=lambda r: r["spec"]["seed"])
    if budget == "flops":
        return [score(r["final_mse"]) for r in recs]
    return [score(mse_at_time(r, t)) for r in recs]


def analyse(tasks: dict[str, dict[str, Any]], family: str = "regression") -> dict[str, Any]:
    """Every row of the declared family that was run, Holm over the rows run."""
    rows = []
    budgets = {}
    for task, base, budget in FAMILIES[family]:
        if task not in tasks:
            continue
        test = tasks[task]["test"]
        t = budgets.setdefault(task, time_budget(test))
        methods = {r["spec"]["method"] for r in test}
        if CHALLENGER not in methods or base not in methods:
            continue
        rows.append({"task": task, "baseline": base, "budget": budget,
                     **paired(_scores(test, CHALLENGER, budget, t),
                              _scores(test, base, budget, t))})
    for row, p in zip(rows, holm([r["p_t"] for r in rows])):
        row["p_holm"] = p
        row["verdict"] = ("no significant difference" if p >= ALPHA else
                          "bcd better" if row["mean_diff"] < 0 else "bcd worse")
    return {"rows": rows, "time_budget": budgets, "family_run": len(rows),
            "family_declared": len(FAMILIES[family])}


def union_holm(rows: list[dict[str, Any]], others: list[dict[str, Any]]) -> None:
    """Holm over ``rows`` and ``others`` together (the sensitivity line of the PINN family:
    its rows with the regression run's); the adjusted p of each of ``rows`` is stored as
    p_holm_union."""
    adjusted = holm([r["p_t"] for r in rows] + [r["p_t"] for r in others])
    for row, p in zip(rows, adjusted):
        row["p_holm_union"] = p


def _g(x: float) -> str:
    return "diverged" if not math.isfinite(x) else f"{x:.3g}"


def summary_markdown(data: dict[str, Any]) -> str:
    size, an = data["size"], data["analysis"]
    family = size.get("family", "regression")
    label = LOSS_LABEL[TASKS[FAMILIES[family][0][0]].kind]
    final = "training MSE" if label == "MSE" else label
    # seeds printed as tuples whether the size comes from the run or from runs.json (lists)
    workers = f" --workers {data['workers']}" if data.get("workers", 1) > 1 else ""
    tuned = (f"settings tuned on seeds {tuple(size['tune_seeds'])}" if size["tune_seeds"] else
             f"settings the `{data['selected_from']}` run selected on its tuning seeds at its "
             "own budget, not re-tuned (the tuning scores below are that run's)")
    lines = [
        f"# Auxiliary-variable solver study: {size['name']} run (generated)", "",
        f"Generated by `python -m experiments.auxvar.solver_study --{size['name']}{workers}` "
        f"on {data['machine']} in {data['elapsed_s'] / 60:.1f} min. Budget: {size['evals']} "
        f"gradient evaluations of the {label} in FLOPs for every method; {tuned}, reported on "
        f"seeds {tuple(size['test_seeds'])}. Score: "
        f"log10 of the final {final}; d = score(bcd) - score(baseline) per seed, negative "
        "favours bcd, ratio = 10^mean(d).", ""]
    for task, res in data["tasks"].items():
        lines += [f"## {task}", "",
                  f"Equal-wall budget T = {an['time_budget'][task]:.2f} s (the smallest median "
                  "training time).", "",
                  f"| method | setting (edge) | tuning scores (mean log10 {label}) | final "
                  f"{label}, median [min, max] | {label} at T | test error | wall [s] | "
                  "iterations | diverged |",
                  "|---|---|---|---|---|---|---|---|---|"]
        t = an["time_budget"][task]
        for m, sel in res["selected"].items():
            recs = [r for r in res["test"] if r["spec"]["method"] == m]
            scores = ", ".join(f"{k}: {_g(v)}" for k, v in sel["scores"].items())
            if not recs:
                lines.append(f"| {m} | none eligible | {scores} | | | | | | |")
                continue
            fin = sorted(r["final_mse"] for r in recs)
            at_t = sorted(mse_at_time(r, t) for r in recs)
            lines.append(
                f"| {m} | {sel['setting']:g}{' (edge)' if sel['at_grid_edge'] else ''} "
                f"| {scores} | {_g(statistics.median(fin))} [{_g(fin[0])}, {_g(fin[-1])}] "
                f"| {_g(statistics.median(at_t))} "
                f"| {_g(statistics.median(r['test_error'] for r in recs))} "
                f"| {statistics.median(r['wall'] for r in recs):.2f} "
                f"| {statistics.median(r['iterations'] for r in recs):.0f} "
                f"| {sum(r['diverged'] for r in recs)}/{len(recs)} |")
        lines.append("")
    lines += [f"## The declared family ({an['family_run']} of {an['family_declared']} rows run; "
              "Holm over the rows run)", "",
              "| task | bcd vs | budget | mean d [95% CI] | ratio | d_z | bcd better on | p_t | "
              "p_Wilcoxon | p_Holm | verdict |", "|---" * 11 + "|"]
    for r in an["rows"]:
        lines.append(
            f"| {r['task']} | {r['baseline']} | {r['budget']} | {r['mean_diff']:+.2f} "
            f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] | {r['ratio']:.3g} | {r['d_z']:+.2f} "
            f"| {r['wins']}/{r['n']} | {r['p_t']:.2g} | {r['p_wilcoxon']:.2g} "
            f"| {r['p_holm']:.2g} | {r['verdict']} |")
    if "union_rows" in an:
        lines += ["", f"Sensitivity: Holm over the union of this family's {an['family_run']} "
                  f"rows and the regression run's {an['union_rows']} "
                  f"({an['family_run'] + an['union_rows']} rows): p_Holm "
                  + ", ".join(f"{r['baseline']} {r['budget']} {r['p_holm_union']:.2g}"
                              for r in an["rows"]) + "."]
    return "\n".join(lines) + "\n"


def write(data: dict[str, Any], out: Path) -> None:
    family = data["size"].get("family", "regression")
    data["analysis"] = analyse(data["tasks"], family)
    if family == "pinn" and REGRESSION_RUN.exists():
        others = json.loads(REGRESSION_RUN.read_text())["analysis"]["rows"]
        union_holm(data["analysis"]["rows"], others)
        data["analysis"]["union_rows"] = len(others)
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs.json").write_text(json.dumps(data, indent=1))
    (out / "summary.md").write_text(summary_markdown(data))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.auxvar.solver_study",
                                 description=__doc__)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", dest="size", const="quick")
    group.add_argument("--full", action="store_const", dest="size", const="full")
    group.add_argument("--pinn", action="store_const", dest="size", const="pinn",
                       help="the PINN family's run")
    group.add_argument("--pinn-quick", action="store_const", dest="size", const="pinn-quick")
    group.add_argument("--long", action="store_const", dest="size", const="long",
                       help="the long-budget regression family's run")
    group.add_argument("--long-quick", action="store_const", dest="size", const="long-quick")
    ap.add_argument("--workers", type=int, default=1,
                    help="processes for the test runs, one seed's methods each (default 1)")
    ap.add_argument("--tasks", nargs="*", help="a subset of the size's tasks")
    ap.add_argument("--out", type=Path, help="output folder (default docs/auxvar/solvers-<size>)")
    ap.add_argument("--report-only", action="store_true", help="redraw from runs.json")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    size = SIZES[args.size or "quick"]
    out = args.out or DEFAULT_OUT / f"solvers-{size.name}"
    if args.report_only:
        write(json.loads((out / "runs.json").read_text()), out)
        return
    torch.set_num_threads(1)
    start = time.time()
    data: dict[str, Any] = {
        "size": size.__dict__,
        "grids": {k: list(v) for k, v in GRIDS_OF[size.family].items()},
        "machine": (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
                    f"(1 thread), Python {platform.python_version()}"),
        "workers": args.workers,
        "tasks": {}}
    if not size.tune_seeds:
        data["selected_from"] = SELECTED_FROM
    for task in args.tasks or size.tasks:
        print(f"[{(time.time() - start) / 60:.1f} min] {task}", flush=True)
        data["tasks"][task] = run_task(task, size, log=lambda s: print(s, flush=True),
                                       workers=args.workers)
        data["elapsed_s"] = time.time() - start
        write(data, out)
    print(f"done in {(time.time() - start) / 60:.1f} min: {out}", flush=True)


if __name__ == "__main__":
    main()
