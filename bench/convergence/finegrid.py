"""A finer learning-rate grid for a few optimizers on one task (validation split), to check that
a verdict does not hinge on the full protocol's 3x-spaced grid.

    python -m bench.convergence.finegrid --task keypoints --optimizers sgd tmsgd \\
        --lrs 0.5 0.7 1 1.4 2 3 4 6 --seeds 0 1

Writes docs/experiments/full/finegrid_<task>.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from .config import FULL
from .optimizers import LABELS
from .pool import run_all
from .protocol import steps_for
from .spec import RunSpec, execute

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "docs" / "experiments" / "full"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.convergence.finegrid", description=__doc__)
    p.add_argument("--task", required=True)
    p.add_argument("--optimizers", nargs="+", required=True)
    p.add_argument("--lrs", nargs="+", type=float, required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = p.parse_args(argv)
    steps = steps_for(args.task, FULL)
    specs = [RunSpec(args.task, opt, lr, s, steps, "val", phase="finegrid")
             for opt in args.optimizers for lr in args.lrs for s in args.seeds]
    runs = run_all(execute, specs, args.workers, label="finegrid")
    table: dict[str, dict[str, float]] = {}
    for opt in args.optimizers:
        for lr in args.lrs:
            vals = [r["final_metric"] for r in runs
                    if r["spec"]["optimizer"] == opt and r["spec"]["lr"] == lr]
            ok = all(v is not None for v in vals)
            table.setdefault(opt, {})[f"{lr:g}"] = float(np.mean(vals)) if ok else math.nan
    (args.dir / f"finegrid_{args.task}.json").write_text(
        json.dumps({"task": args.task, "steps": steps, "seeds": args.seeds, "table": table,
                    "runs": runs}, indent=1)
    )
    print("| optimizer | " + " | ".join(f"{lr:g}" for lr in args.lrs) + " |")
    print("|---|" + "---|" * len(args.lrs))
    for opt, row in table.items():
        cells = ["div." if math.isnan(v) else f"{v:.3f}" for v in row.values()]
        print(f"| {LABELS[opt]} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
