"""Confirmatory re-test of one comparison with fresh seeds (the full protocol makes 20
comparisons at 5 seeds each, so an isolated 'win' or 'loss' may be chance).

    python -m bench.convergence.confirm --task ctr_widedeep --pair tmsgdm:sgdm --seeds 10

Reads the selected learning rates from docs/experiments/full/runs.json, runs both optimizers on
seeds never used before (200, 201, ...), and writes confirm_<task>_<challenger>_vs_<baseline>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .config import FULL
from .pool import run_all
from .protocol import steps_for
from .spec import RunSpec, execute
from .stats import summarize, verdict

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "docs" / "experiments" / "full"
FIRST_SEED = 200


def confirm(task: str, challenger: str, baseline: str, n_seeds: int, folder: Path,
            workers: int, lr_override: dict[str, float] | None = None) -> dict[str, Any]:
    lrs = dict(json.loads((folder / "runs.json").read_text())["selected_lr"][task])
    lrs.update(lr_override or {})
    steps = steps_for(task, FULL)
    seeds = range(FIRST_SEED, FIRST_SEED + n_seeds)
    specs = [RunSpec(task, opt, lrs[opt], s, steps, "test", phase="confirm")
             for opt in (challenger, baseline) for s in seeds]
    runs = run_all(execute, specs, workers, label="confirm")
    summ = {opt: summarize([r for r in runs if r["spec"]["optimizer"] == opt])
            for opt in (challenger, baseline)}
    result = {
        "task": task, "challenger": challenger, "baseline": baseline, "seeds": list(seeds),
        "summaries": summ, "verdict": verdict(task, summ[challenger], summ[baseline]),
        "runs": runs,
    }
    tag = "_lr" + "_".join(f"{lrs[o]:g}" for o in (challenger, baseline)) if lr_override else ""
    out = folder / f"confirm_{task}_{challenger}_vs_{baseline}{tag}.json"
    out.write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.convergence.confirm", description=__doc__)
    p.add_argument("--task", required=True)
    p.add_argument("--pair", required=True, help="challenger:baseline, e.g. tmsgdm:sgdm")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    p.add_argument("--lrs", default=None,
                   help="challenger_lr:baseline_lr in place of the selected ones")
    args = p.parse_args(argv)
    challenger, baseline = args.pair.split(":")
    override = None
    if args.lrs:
        lr_c, lr_b = (float(x) for x in args.lrs.split(":"))
        override = {challenger: lr_c, baseline: lr_b}
    r = confirm(args.task, challenger, baseline, args.seeds, args.dir, args.workers, override)
    for opt, s in r["summaries"].items():
        print(f"{opt}: {s['mean']:.3f} ± {s['std']:.3f} (n={s['n']}, lr {s['lr']:g})")
    v = r["verdict"]
    print(f"{challenger} vs {baseline}: diff {v['diff']:+.3f}, 2se {v['two_se']:.3f}, "
          f"p {v['p']:.3f}: {v['verdict']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
