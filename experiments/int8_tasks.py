"""Does 8-bit optimizer state change what training reaches? Two tasks of the convergence study
(experiments/convergence: digits_cnn, test accuracy; keypoints, test MSE x100) trained by the
study's own loop (train_supervised: its data, model, seeds, batch order and evaluation), with
TMSGD's state in fp32 and in 8 bits, paired by seed.

Declared before any run (this docstring and COMPARISONS are committed first):
- Optimizers at the study's selected lr for each task (docs/experiments/full/runs.json):
  TM-SGD ("tmsgd") and TM-SGD-M with momentum 0.9 ("tmsgdm0.9"), 12 test seeds (400-411, used
  by no other run), the task's full step budget.
- Six comparisons, one family, exact Wilcoxon signed-rank on the per-seed differences (8-bit
  minus fp32), Holm over the six:
      per task: TM-SGD int8 history; TM-SGD-M int8 history; TM-SGD-M int8 history + int8 buffer.
- The claim holds for a comparison when its Holm p >= 0.05 and the mean difference is at most
  0.5 points of accuracy (digits_cnn) or 5% of the fp32 runs' mean test MSE (keypoints), and
  the relative weight drift from the fp32 run after 25 steps is at most 1e-3 on every seed.

    python -m experiments.int8_tasks [--seeds 12] [--backend torch] [--out FILE.json]
    python -m experiments.int8_tasks --report FILE.json     (the table, from the raw results)
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from pathlib import Path
from unittest import mock

import torch

from experiments import stats
from experiments.convergence import optimizers
from experiments.convergence.spec import RunSpec
from experiments.convergence.tasks import get_task
from experiments.convergence.train_loop import train_supervised
from tmsgd_kernels import TMSGD

TASKS = ("digits_cnn", "keypoints")
SEEDS = tuple(range(400, 412))
DRIFT_STEPS = 25
# (optimizer configuration, 8-bit state): the 8-bit variants compared with the fp32 run.
VARIANTS = {
    "tmsgd": ("int8 history",),
    "tmsgdm0.9": ("int8 history", "int8 history + int8 buffer"),
}
STATE_OPTIONS = {
    "fp32": {},
    "int8 history": {"history_dtype": torch.int8},
    "int8 history + int8 buffer": {"history_dtype": torch.int8, "momentum_dtype": torch.int8},
}
MAX_ACCURACY_DIFFERENCE = 0.5  # points
MAX_RELATIVE_MSE_DIFFERENCE = 0.05
MAX_DRIFT = 1e-3
ALPHA = 0.05
SELECTED = Path("docs/experiments/full/runs.json")


def selected_lr(task: str, config: str) -> float:
    """The study's selected lr of `config` on `task` (its lr selection on validation seeds)."""
    selected = json.loads(SELECTED.read_text())["tasks"][task]["selected"]
    for choice in selected.values():
        for option in choice["options"]:
            if option["config"] == config:
                return option["lr"]
    raise KeyError(f"no selected lr for {config} on {task}")


class _Recorded:
    """The study's task, delegating everything, with the model it makes kept for reading."""

    def __init__(self, task) -> None:
        self._task = task
        self.models: list[torch.nn.Module] = []

    def __getattr__(self, name: str):
        return getattr(self._task, name)

    def model(self) -> torch.nn.Module:
        self.models.append(self._task.model())
        return self.models[-1]


def run(task_name: str, config: str, state: str, seed: int, steps: int, backend: str
        ) -> tuple[float | None, torch.Tensor]:
    """(final test metric or None if diverged, the final weights flattened) of one run of the
    study's loop, TMSGD built with `state`'s dtypes."""
    task = _Recorded(get_task(task_name))
    spec = RunSpec(task_name, config, selected_lr(task_name, config), seed, steps, "test",
                   "final")
    made = functools.partial(TMSGD, backend=backend, **STATE_OPTIONS[state])
    with mock.patch.object(optimizers, "TMSGD", made):
        result = train_supervised(task, spec)
    weights = torch.cat([p.detach().flatten() for p in task.models[-1].parameters()])
    return result["final_metric"], weights


def measure(seeds: tuple[int, ...], backend: str) -> dict:
    torch.set_num_threads(1)
    results: dict = {"backend": backend, "torch": torch.__version__, "runs": []}
    for task_name in TASKS:
        steps = get_task(task_name).steps_full
        for config, variants in VARIANTS.items():
            for seed in seeds:
                record = {"task": task_name, "config": config, "seed": seed, "steps": steps,
                          "lr": selected_lr(task_name, config), "metric": {}, "drift": {}}
                early = {}
                for state in ("fp32", *variants):
                    record["metric"][state], _ = run(task_name, config, state, seed, steps,
                                                     backend)
                    _, early[state] = run(task_name, config, state, seed, DRIFT_STEPS, backend)
                for state in variants:
                    record["drift"][state] = ((early[state] - early["fp32"]).norm()
                                              / early["fp32"].norm()).item()
                results["runs"].append(record)
                print(f"{task_name} {config} seed {seed}: {record['metric']} drift "
                      f"{record['drift']}", flush=True)
    return results


def analyse(results: dict) -> list[dict]:
    """The declared family's rows, Holm-adjusted."""
    rows = []
    for task_name in TASKS:
        for config, variants in VARIANTS.items():
            runs = [r for r in results["runs"] if r["task"] == task_name and r["config"] == config]
            for state in variants:
                pairs = [(r["metric"][state], r["metric"]["fp32"]) for r in runs]
                complete = [(a, b) for a, b in pairs if a is not None and b is not None]
                differences = [a - b for a, b in complete]
                fp32_mean = statistics.mean(b for _, b in complete)
                rows.append({
                    "task": task_name, "config": config, "state": state,
                    "seeds": len(runs), "diverged": len(pairs) - len(complete),
                    "fp32_mean": fp32_mean, "mean_difference": statistics.mean(differences),
                    "min_difference": min(differences), "max_difference": max(differences),
                    "equal_seeds": sum(d == 0 for d in differences),
                    "p": stats.wilcoxon_exact(differences),
                    "max_drift_at_25": max(r["drift"][state] for r in runs),
                })
    for row, adjusted in zip(rows, stats.holm([row["p"] for row in rows])):
        row["p_holm"] = adjusted
        limit = (MAX_ACCURACY_DIFFERENCE if row["task"] == "digits_cnn"
                 else MAX_RELATIVE_MSE_DIFFERENCE * row["fp32_mean"])
        row["holds"] = (row["p_holm"] >= ALPHA and abs(row["mean_difference"]) <= limit
                        and row["max_drift_at_25"] <= MAX_DRIFT and row["diverged"] == 0)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| task | optimizer | 8-bit state | fp32 mean | mean diff (min, max) | equal seeds "
             "| Holm p | max drift @25 | holds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['config']} | {r['state']} | {r['fp32_mean']:.3f} | "
            f"{r['mean_difference']:+.3f} ({r['min_difference']:+.3f}, "
            f"{r['max_difference']:+.3f}) | {r['equal_seeds']}/{r['seeds']} | "
            f"{r['p_holm']:.3g} | {r['max_drift_at_25']:.2g} | {'yes' if r['holds'] else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=len(SEEDS))
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--out", default=None)
    parser.add_argument("--report", default=None, help="print the table of saved results")
    args = parser.parse_args()
    if args.report:
        results = json.loads(Path(args.report).read_text())
    else:
        results = measure(SEEDS[:args.seeds], args.backend)
    results["analysis"] = analyse(results)
    print(table(results["analysis"]))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
