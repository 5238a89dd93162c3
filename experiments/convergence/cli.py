"""Command line: the protocol on every task, the paired analysis, the theory section; JSON,
summary and figures.

Tasks run one after another; runs.json, summary.md and the figures are rewritten after each, so
an interrupted run leaves the finished tasks' results (``--report-only`` redraws from the JSON)
and ``--resume`` runs the declared tasks it lacks. Every run is seeded per task, so a resumed
task gives what it would have given in one go.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from .analysis import analyse
from .config import BUDGET, FULL, QUICK
from .design import ALPHA, BUDGET_TASKS, FAMILIES, TARGET_EFFECT, TARGET_POWER, family_size
from .plots import all_plots
from .protocol import run_task
from .report import summary_markdown
from .tasks import TASK_NAMES

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "experiments"


def _machine() -> str:
    import os

    import torch

    from tmsgd_kernels import available_backends

    native = [b for b, why in available_backends().items() if why is None]
    return (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"Python {platform.python_version()}, TMSGD backends available: {native}")


def write(results: dict[str, Any], out: Path) -> None:
    """Analyse and write runs.json, summary.md and the figures."""
    declared = results.get("declared", {})  # runs made before these keys existed lack them
    families = tuple(results["config"].get("families", FAMILIES))
    results["analysis"] = analyse(results["tasks"], families, declared.get("tasks"))
    (out / "runs.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "summary.md").write_text(summary_markdown(results))
    all_plots(results, out)


def resumed(old: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """The interrupted run ``old`` carried into ``fresh``: its finished tasks kept, the rest to run.

    Only the same run may be resumed: the same configuration, declaration and command; anything
    else would mix two protocols in one report, so it is refused.
    """
    if old.get("complete"):
        raise ValueError("that run is complete: nothing to resume")
    for key in ("config", "declared", "command"):
        if json.loads(json.dumps(fresh[key], default=str)) != old.get(key):
            raise ValueError(f"cannot resume: the saved run's {key} differs from this one's; "
                             f"the saved run was made with {old.get('command')!r}")
    done = [t for t in fresh["declared"]["tasks"] if t in old["tasks"]]
    return {**fresh, "tasks": {t: old["tasks"][t] for t in done},
            "task_wall_s": dict(old["task_wall_s"]),
            "resumed": [*old.get("resumed", []),
                        {"after": done, "machine": fresh["machine"],
                         "previous_wall_s": old.get("wall_s", 0.0)}]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.convergence", description=__doc__)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the quick protocol (default)")
    size.add_argument("--full", action="store_true", help="the full protocol (reported)")
    size.add_argument("--budget", action="store_true",
                      help="issue 25's budget run: the full protocol at 4x the steps, primary "
                           "and momentum families, on design.BUDGET_TASKS")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--tasks", nargs="+", choices=TASK_NAMES, default=None,
                   help="tasks, in this order (default: all; --budget: design.BUDGET_TASKS)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default docs/experiments/<quick|full>[-steps<N>x])")
    p.add_argument("--steps-factor", type=int, default=1,
                   help="multiply every task's step budget (issue 25: rerun at 4x)")
    p.add_argument("--no-theory", action="store_true", help="skip the theory section")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--report-only", action="store_true",
                      help="redraw summary.md and figures from an existing runs.json")
    mode.add_argument("--resume", action="store_true",
                      help="run the declared tasks an interrupted run in --out lacks")
    args = p.parse_args(argv)
    config = BUDGET if args.budget else FULL if args.full else QUICK
    if args.steps_factor < 1:
        p.error("--steps-factor must be a positive integer")
    if args.steps_factor != 1:
        config = dataclasses.replace(config, steps_factor=config.steps_factor * args.steps_factor)
    tasks = args.tasks or list(BUDGET_TASKS if args.budget else TASK_NAMES)
    name = config.mode if args.steps_factor == 1 else f"{config.mode}-steps{args.steps_factor}x"
    out = args.out or DEFAULT_OUT / name
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        write(json.loads((out / "runs.json").read_text()), out)
        print((out / "summary.md").read_text())
        return 0
    start = time.perf_counter()
    command = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--resume"]
    results: dict[str, Any] = {
        "config": config.__dict__, "command": " ".join(command),
        "machine": _machine(), "tasks": {}, "task_wall_s": {},
        "declared": {"families": {f: FAMILIES[f] for f in config.families}, "tasks": tasks,
                     "alpha": ALPHA,
                     "family_sizes": {f: family_size(len(tasks), f) for f in config.families},
                     "target_effect_dz": TARGET_EFFECT, "target_power": TARGET_POWER},
        "complete": False,
    }
    if args.resume:
        saved = out / "runs.json"
        if not saved.exists():
            p.error(f"--resume: {saved} does not exist")
        try:
            results = resumed(json.loads(saved.read_text()), results)
        except ValueError as e:
            p.error(str(e))
    previous_wall_s = results["resumed"][-1]["previous_wall_s"] if args.resume else 0.0
    if not args.no_theory and not args.resume:
        from .theory import write as write_theory

        t0 = time.perf_counter()
        write_theory(out, config.quick, config.quadratic_steps)
        results["task_wall_s"]["theory"] = round(time.perf_counter() - t0, 1)
        print(f"theory: {results['task_wall_s']['theory']:.0f} s", flush=True)
    for task in tasks:
        if task in results["tasks"]:
            continue
        t0 = time.perf_counter()
        results["tasks"][task] = run_task(task, config, args.workers)
        results["task_wall_s"][task] = round(time.perf_counter() - t0, 1)
        results["wall_s"] = previous_wall_s + time.perf_counter() - start
        write(results, out)
        print(f"{task}: {results['task_wall_s'][task]:.0f} s", flush=True)
    results["wall_s"] = previous_wall_s + time.perf_counter() - start
    results["complete"] = True
    write(results, out)
    print((out / "summary.md").read_text())
    print(f"wrote {out}: runs.json, summary.md, figures; {results['wall_s']:.0f} s in all")
    return 0
