"""Exploratory follow-up (outside the declared comparisons): do the J methods catch up with a
longer budget? Runs some methods at the learning rates selected by the full run, for more
steps, on the first test seeds, and writes ``longer.json`` beside the full run's results.

    python -m experiments.auxvar.longer --task reg8 --steps 4000 --seeds 3

``--lr`` overrides the selected rate and ``--tuning-seed`` runs on the tuning seed instead
(used to check a rate selected at the edge of its grid: the next grid step beyond it).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from .cli import DEFAULT_OUT
from .train import RunSpec, execute

METHODS = ("mse-adam", "mse-tmsgd", "adaptive-adam", "fixed10-adam")


def main(argv: list[str] | None = None) -> None:
    """Run the follow-up and print the median final loss per method."""
    ap = argparse.ArgumentParser(prog="python -m experiments.auxvar.longer")
    ap.add_argument("--task", default="reg8")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT / "full")
    ap.add_argument("--lr", type=float, help="use this rate instead of the selected one")
    ap.add_argument("--tuning-seed", action="store_true", help="run on the tuning seed(s)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    full = json.loads((args.out / "runs.json").read_text())
    res = full["tasks"][args.task]
    seeds = full["config"]["tune_seeds" if args.tuning_seed else "test_seeds"][:args.seeds]
    records = []
    for m in args.methods:
        lr = args.lr if args.lr is not None else res["selected"][m]["lr"]
        recs = [execute(RunSpec(args.task, m, lr, s, args.steps, 100, "longer")) for s in seeds]
        records += recs
        finals = [r["final_loss"] for r in recs]
        print(f"{args.task} {m} lr {lr:g}: final loss median {statistics.median(finals):.3g} "
              f"[{min(finals):.3g}, {max(finals):.3g}], bound violations "
              f"{sum(r['bound_violations'] for r in recs)}", flush=True)
    tag = f"_lr{args.lr:g}" if args.lr is not None else ""
    path = args.out / f"longer_{args.task}_{args.steps}{tag}.json"
    path.write_text(json.dumps({"task": args.task, "steps": args.steps, "seeds": seeds,
                                "lr_override": args.lr, "records": records}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
