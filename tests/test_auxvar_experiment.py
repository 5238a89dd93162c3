"""Smoke test of experiments/auxvar: a few steps of every task with a J method and an original
one (bound logged and never violated), the paired statistics against hand-worked values and
scipy, and the report renders. A few seconds on a CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
from auxvar_helpers import one_thread  # noqa: F401  (autouse fixture)
from scipy import stats as sps

from experiments.auxvar.analysis import analyse, loss_at_time
from experiments.auxvar.report import summary_markdown
from experiments.auxvar.stats import bootstrap_mean_ci, holm, paired, score
from experiments.auxvar.tasks import TASKS
from experiments.auxvar.train import RunSpec, execute


@pytest.mark.parametrize("task", sorted(TASKS))
def test_runs_log_the_bound_and_it_holds(task: str) -> None:
    aux = execute(RunSpec(task, "adaptive-adam", 1e-3, 0, 6, 3, "test"))
    orig = execute(RunSpec(task, "mse-tmsgd", 1e-3, 0, 6, 3, "test"))
    assert aux["curves"]["step"] == [0, 3, 6] == orig["curves"]["step"]
    assert aux["bound_checked"] == 3 and aux["bound_violations"] == 0
    c = aux["curves"]
    assert all(a <= b for a, b in zip(c["loss"], c["bound"]))
    # same seed, same network: both start at the same true loss, and J starts equal to it
    assert c["loss"][0] == pytest.approx(orig["curves"]["loss"][0], rel=1e-12)
    assert c["objective"][0] == pytest.approx(c["loss"][0], rel=1e-12)
    assert math.isfinite(aux["final_loss"]) and math.isfinite(orig["test_error"])
    assert orig["bound_checked"] == 0


def test_alternating_moves_one_block_per_step() -> None:
    rec = execute(RunSpec("reg4", "adaptive-adam-alt", 1e-2, 0, 2, 1, "test"))
    # step 1 moves z only: the network, hence the true loss, is unchanged; step 2 moves theta
    assert rec["curves"]["loss"][1] == rec["curves"]["loss"][0]
    assert rec["curves"]["loss"][2] != rec["curves"]["loss"][1]


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, 2 * 0.03, max(0.06, 1 * 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_paired_statistics_against_scipy() -> None:
    a = [0.1, -0.3, 0.2, -0.5, -0.4, -0.2]
    b = [0.0, 0.1, 0.1, 0.0, 0.2, 0.1]
    r = paired(a, b)
    d = np.subtract(a, b)
    assert r["mean_diff"] == pytest.approx(d.mean())
    assert r["p_t"] == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue)
    assert r["p_wilcoxon"] == pytest.approx(sps.wilcoxon(d).pvalue)
    assert r["wins"] == 4 and r["losses"] == 2     # d = .1 -.4 .1 -.5 -.6 -.3
    assert r["ci_low"] < r["mean_diff"] < r["ci_high"]
    assert bootstrap_mean_ci(np.full(5, 0.25)) == pytest.approx((0.25, 0.25))


def test_score_caps_divergence() -> None:
    assert score(1e-3) == pytest.approx(-3.0)
    assert score(math.inf) == score(math.nan) == pytest.approx(6.0)


def test_loss_at_time_and_report() -> None:
    recs = {m: [execute(RunSpec("reg4", m, 1e-3, s, 4, 2, "test")) for s in (1, 2)]
            for m in ("mse-adam", "adaptive-adam")}
    r = recs["mse-adam"][0]
    assert loss_at_time(r, -1.0) == r["curves"]["loss"][0]
    assert loss_at_time(r, 1e9) == r["curves"]["loss"][-1]
    selected = {m: {"lr": 1e-3, "score": 0.0, "at_grid_edge": False} for m in recs}
    tasks = {"reg4": {"selected": selected, "tune": [], "ablation": [],
                      "test": recs["mse-adam"] + recs["adaptive-adam"]}}
    an = analyse(tasks)
    assert {r["budget"] for r in an["comparisons"]} == {"evals", "wall"}
    text = summary_markdown({"config": {"name": "t", "steps": 4, "eval_every": 2,
                                        "tune_seeds": (0,), "test_seeds": (1, 2)},
                             "machine": "test", "elapsed_s": 1.0, "tasks": tasks,
                             "analysis": an})
    assert "adaptive-adam" in text and "p_Holm" in text
