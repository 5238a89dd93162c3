"""Follow-up of the solver study (outside its declared family, not corrected): bcd at proximal
weights beyond the grid's edge, because the full run selected the smallest rho tried (1e-8) on
every task.

    python -m experiments.auxvar.solver_followup --rho 1e-10 1e-12   # tuning seeds 0-2
    python -m experiments.auxvar.solver_followup --rho 1e-12 --test  # the test seeds, paired
                                                                      # with the full run's
    python -m experiments.auxvar.solver_followup --size long --rho 1e-12 --test --workers 2
                                      # the same beside the long run (10,000 evaluations)
Writes ``followup.json`` beside the run's results (merged with what is there) and prints
each setting's mean log10 final MSE; with ``--test`` also the paired comparison with that
run's baselines on the same seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from .solver_design import BASELINES, SIZES
from .solver_runs import SolverRun, execute, mapped
from .solver_study import DEFAULT_OUT
from .stats import paired, score


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.auxvar.solver_followup")
    ap.add_argument("--rho", type=float, nargs="+", required=True)
    ap.add_argument("--size", choices=("full", "long"), default="full",
                    help="the run to follow up (its budget, seeds and folder)")
    ap.add_argument("--tasks", nargs="+")
    ap.add_argument("--test", action="store_true", help="the test seeds instead of tuning")
    ap.add_argument("--workers", type=int, default=1, help="processes, one seed each")
    args = ap.parse_args(argv)
    size = SIZES[args.size]
    seeds = size.test_seeds if args.test else size.tune_seeds
    if not seeds:
        ap.error(f"the {args.size} run has no tuning seeds; use --test")
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    torch.set_num_threads(1)
    out = DEFAULT_OUT / f"solvers-{size.name}"
    full = json.loads((out / "runs.json").read_text())
    path = out / "followup.json"
    store = json.loads(path.read_text()) if path.exists() else {}
    phase = "test" if args.test else "tune"
    for task in args.tasks or size.tasks:
        for rho in args.rho:
            specs = [SolverRun(task, "bcd", rho, s, size.evals, size.checkpoints, phase)
                     for s in seeds]
            recs = mapped(execute, specs, workers=args.workers)
            store[f"{task} bcd rho={rho:g} {phase}"] = [
                {k: v for k, v in r.items() if k != "curves"} for r in recs]
            mean = statistics.fmean(score(r["final_mse"]) for r in recs)
            line = f"{task} rho {rho:g} ({phase}): mean log10 MSE {mean:.3f}"
            if args.test:
                for base in BASELINES:
                    ref = sorted((r for r in full["tasks"][task]["test"]
                                  if r["spec"]["method"] == base),
                                 key=lambda r: r["spec"]["seed"])
                    row = paired([score(r["final_mse"]) for r in recs],
                                 [score(r["final_mse"]) for r in ref])
                    line += (f"; vs {base} at equal FLOPs: ratio {row['ratio']:.3g}, "
                             f"{row['wins']}/{row['n']}, p_t {row['p_t']:.2g}")
            print(line, flush=True)
            path.write_text(json.dumps(store, indent=1))


if __name__ == "__main__":
    main()
