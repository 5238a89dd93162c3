"""Smoke test of bench/convergence: every task runs a few steps and yields a finite metric; the
stability theory gives the known limits; the report renders. Well under 20 s on a CPU."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not installed

from bench.convergence.report import summary_markdown  # noqa: E402
from bench.convergence.spec import RunSpec, execute  # noqa: E402
from bench.convergence.stability import _quadratic_stable, theory_limit  # noqa: E402
from bench.convergence.stats import analyse  # noqa: E402
from bench.convergence.tasks import TASK_NAMES  # noqa: E402


@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("optimizer", ["tmsgd", "tmsgdm"])
def test_task_runs_and_gives_a_finite_metric(task: str, optimizer: str) -> None:
    rec = execute(RunSpec(task, optimizer, 0.01, 0, 6, "test", switch_step=2, phase="final"))
    assert not rec["diverged"]
    assert math.isfinite(rec["final_metric"])
    assert rec["curves"]["step"][-1] == 6


def test_stability_theory_and_measurement() -> None:
    assert theory_limit("sgd") == pytest.approx(2.0, abs=1e-6)
    assert theory_limit("tmsgd") == pytest.approx(1.0, abs=1e-6)
    assert theory_limit("sgdm") == pytest.approx(3.8, abs=1e-6)
    # the real optimizers on the quadratic (L = 10): stable just below the limit, not just above
    assert _quadratic_stable("tmsgd", 0.097, 1500) and not _quadratic_stable("tmsgd", 0.103, 1500)
    assert _quadratic_stable("sgd", 0.197, 1500) and not _quadratic_stable("sgd", 0.203, 1500)


def test_summary_renders() -> None:
    runs = [
        execute(RunSpec("lstm_seq", opt, 0.1, seed, 3, "test", phase="final"))
        for opt in ("sgd", "tmsgd")
        for seed in (0, 1)
    ]
    results = {
        "selected_lr": {"lstm_seq": {"sgd": 0.1, "tmsgd": 0.1}},
        "runs": runs,
        "steps": {"lstm_seq": 3},
        "config": {"mode": "test", "grid_seeds": (0,), "final_seeds": (0, 1)},
        "wall_s": 0.0,
        "machine": "test",
    }
    results["analysis"] = analyse(results)
    text = summary_markdown(results)
    assert "tmsgd vs sgd" in text and "lstm_seq" in text
