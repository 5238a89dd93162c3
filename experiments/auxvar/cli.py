"""Command line: run the protocol task by task, rewriting runs.json, summary.md and the figures
after each task (an interrupted run keeps what finished)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from .analysis import analyse
from .config import CONFIGS
from .plots import all_plots
from .protocol import run_task
from .report import summary_markdown

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "auxvar"


def _machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} thread), Python {platform.python_version()}")


def write(data: dict[str, Any], out: Path) -> None:
    """runs.json, summary.md and the figures from the finished tasks in ``data``."""
    data["analysis"] = analyse(data["tasks"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs.json").write_text(json.dumps(data, indent=1))
    (out / "summary.md").write_text(summary_markdown(data))
    all_plots(data["tasks"], out)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run (or redraw) the study."""
    ap = argparse.ArgumentParser(prog="python -m experiments.auxvar", description=__doc__)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="size", const="quick")
    size.add_argument("--full", action="store_const", dest="size", const="full")
    ap.add_argument("--tasks", nargs="*", help="a subset of the configuration's tasks")
    ap.add_argument("--out", type=Path, help="output folder (default docs/auxvar/<size>)")
    ap.add_argument("--report-only", action="store_true", help="redraw from runs.json")
    args = ap.parse_args(argv)
    cfg = CONFIGS[args.size or "quick"]
    out = args.out or DEFAULT_OUT / cfg.name
    if args.report_only:
        write(json.loads((out / "runs.json").read_text()), out)
        return
    # one thread: small matrices, and runs are timed (equal-wall-time comparison)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    start = time.time()
    data: dict[str, Any] = {"config": cfg.__dict__, "machine": _machine(), "tasks": {}}
    for task in args.tasks or cfg.tasks:
        print(f"[{(time.time() - start) / 60:.1f} min] {task}", flush=True)
        data["tasks"][task] = run_task(task, cfg, progress=lambda s: print(s, flush=True))
        data["elapsed_s"] = time.time() - start
        write(data, out)
    print(f"done in {(time.time() - start) / 60:.1f} min: {out}", flush=True)
