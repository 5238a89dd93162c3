"""The solver study (experiments/auxvar/solver_*.py): its declared family and seeds, the FLOP
accounting of a run against torch's flop counter and by hand, the budget every method spends,
the selection's divergence rule, and the pipeline end to end on a tiny budget; the same for the
PINN family (pinn4 routed to the PINN block-coordinate solver, baselines on the PINN loss) and
the long-budget family (committed settings, worker processes that change no value)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from auxvar_helpers import one_thread  # noqa: F401  (autouse fixture)
from torch.utils.flop_counter import FlopCounterMode

from experiments.auxvar import solver_followup, solver_study
from experiments.auxvar.solver_design import (
    BASELINES,
    BUDGETS,
    EARLIER_TEST_SEEDS,
    FAMILIES,
    FAMILY,
    FULL,
    GRIDS,
    LONG,
    LONG_FAMILY,
    LONG_QUICK,
    PINN,
    PINN_FAMILY,
    PINN_QUICK,
    QUICK,
    SELECTED_FROM,
    SIZES,
    TASKS,
    Size,
)
from experiments.auxvar.solver_runs import SolverRun, eval_flops, execute
from experiments.auxvar.tasks import N_TRAIN, WIDTH, build_loss


def test_family_has_each_row_once_and_seeds_are_fresh() -> None:
    assert len(FAMILY) == len(set(FAMILY)) == len(TASKS) * len(BASELINES) * len(BUDGETS)
    assert len(FULL.test_seeds) >= 10 and len(FULL.tune_seeds) >= 3
    for size in (FULL, QUICK):
        assert not set(size.test_seeds) & (EARLIER_TEST_SEEDS | set(size.tune_seeds))
    assert not set(FULL.test_seeds) & set(QUICK.test_seeds)


def test_eval_flops_is_a_forward_and_backward_pass() -> None:
    """2 N d_in d_out per layer forward, twice that backward except the first layer, whose
    input needs no gradient."""
    loss = build_loss("reg4", 0)
    dims = [(1, WIDTH), (WIDTH, WIDTH), (WIDTH, WIDTH), (WIDTH, 1)]
    forward = sum(2 * N_TRAIN * a * b for a, b in dims)
    assert eval_flops(loss) == 3 * forward - 2 * N_TRAIN * dims[0][0] * dims[0][1]


@pytest.mark.parametrize("method,setting", [("gd", 0.1), ("adam", 1e-2), ("lbfgs", 1.0),
                                            ("bcd", 1e-4)])
def test_every_method_spends_the_budget(method: str, setting: float) -> None:
    rec = execute(SolverRun("reg4", method, setting, 0, 12, 3, "test"))
    budget, per_eval = rec["flops_budget"], rec["flops_per_eval"]
    assert budget == 12 * per_eval and not rec["diverged"]
    assert rec["flops"] >= budget
    c = rec["curves"]
    assert c["flops"][-1] == rec["flops"] and c["flops"] == sorted(c["flops"])
    # the start and the checkpoints crossed (one L-BFGS call may cross both)
    assert len(c["mse"]) >= (2 if method == "lbfgs" else 3)
    assert rec["final_mse"] == c["mse"][-1] < c["mse"][0]
    if method in ("gd", "adam"):  # one gradient evaluation per step, no overshoot
        assert rec["iterations"] == 12 and rec["flops"] == budget
    else:  # the last iteration may overshoot by at most one iteration's work
        assert rec["flops"] - budget < rec["flops"] / rec["iterations"] * 3


def _rec(method: str, setting: float, mse: float) -> dict:
    return {"spec": {"method": method, "setting": setting}, "final_mse": mse,
            "diverged": not math.isfinite(mse)}


def test_selection_excludes_a_setting_that_diverged_on_any_tuning_seed() -> None:
    lo, hi = GRIDS["gd"][0], GRIDS["gd"][-1]
    tune = [_rec("gd", lo, 0.5), _rec("gd", lo, 0.4), _rec("gd", hi, 1e-3),
            _rec("gd", hi, math.inf)] + [_rec("gd", s, 0.45) for s in GRIDS["gd"][1:-1]
                                          for _ in range(2)]
    sel = solver_study.select(tune, "gd")
    assert sel["scores"][f"{hi:g}"] == math.inf
    assert sel["setting"] == GRIDS["gd"][0]  # mean log10 of 0.5, 0.4 is below that of 0.45
    tune = [_rec("gd", s, math.inf) for s in GRIDS["gd"]]
    assert solver_study.select(tune, "gd")["setting"] is None


def test_pipeline_end_to_end_on_a_tiny_budget(tmp_path) -> None:  # noqa: ANN001
    size = Size("tiny", evals=3, checkpoints=1, tune_seeds=(0,), test_seeds=(300, 301),
                tasks=("reg4",))
    res = solver_study.run_task("reg4", size, log=lambda _: None)
    assert set(res["selected"]) == {"bcd", *BASELINES}
    assert len(res["test"]) == 2 * 4
    data = {"size": size.__dict__, "machine": "test", "elapsed_s": 1.0, "tasks": {"reg4": res}}
    solver_study.write(data, tmp_path)
    rows = data["analysis"]["rows"]
    assert [(r["baseline"], r["budget"]) for r in rows] == [
        (b, k) for b in BASELINES for k in BUDGETS]
    text = (tmp_path / "summary.md").read_text()
    assert "| reg4 | lbfgs | wall |" in text and "6 of 18 rows run" in text
    walls = {m: [r["wall"] for r in res["test"] if r["spec"]["method"] == m]
             for m in res["selected"]}
    # the wall budget is the smallest median training time (median of two = their mean)
    expected = min((w[0] + w[1]) / 2 for w in walls.values())
    assert data["analysis"]["time_budget"]["reg4"] == pytest.approx(expected, rel=1e-12)


def test_pinn_family_has_each_row_once_and_fresh_disjoint_seeds() -> None:
    assert len(PINN_FAMILY) == len(set(PINN_FAMILY)) == len(BASELINES) * len(BUDGETS)
    assert {task for task, _, _ in PINN_FAMILY} == {"pinn4"}
    assert not set(PINN_FAMILY) & set(FAMILY)
    assert PINN.evals >= 10_000 and len(PINN.test_seeds) >= 10 and len(PINN.tune_seeds) >= 3
    others = {*FULL.tune_seeds, *FULL.test_seeds, *QUICK.tune_seeds, *QUICK.test_seeds,
              *EARLIER_TEST_SEEDS}
    for size in (PINN, PINN_QUICK):
        assert size.family == "pinn" and size.tasks == ("pinn4",)
        assert not set(size.test_seeds) & (others | set(size.tune_seeds))
    assert not set(PINN.test_seeds) & set(PINN_QUICK.test_seeds)


def test_pinn_eval_flops_match_torchs_counter_with_module_tracking() -> None:
    """eval_flops counts without per-module attribution (its module tracker fails inside the
    PINN loss's nested autograd.grad); torch's own counter, modules tracked, on the same PINN
    loss written with a non-leaf input (which the tracker accepts) counts the same FLOPs."""
    loss = build_loss("pinn4", 0)
    with FlopCounterMode(display=False) as counter:
        x = loss.interior.clone().requires_grad_(True) * 1.0
        (grad,) = torch.autograd.grad(loss.model(x).sum(), x, create_graph=True)
        pde = ((grad * loss.velocity).sum(1, keepdim=True) - loss.source).square().mean()
        bnd = (loss.model(loss.boundary) - loss.boundary_values).square().mean()
        torch.autograd.grad(pde + loss.boundary_weight * bnd, loss.theta_parameters())
    assert eval_flops(loss) == counter.get_total_flops() > 0


def test_bcd_is_routed_to_the_solver_of_the_tasks_kind() -> None:
    pinn = execute(SolverRun("pinn4", "bcd", 1e-8, 0, 12, 3, "test"))
    reg = execute(SolverRun("reg4", "bcd", 1e-8, 0, 12, 3, "test"))
    assert pinn["solver"] == "PINNBlockCoordinateSolver"
    assert reg["solver"] == "BlockCoordinateSolver"
    start = float(build_loss("pinn4", 0).pinn_loss(create_graph=False))
    assert pinn["curves"]["mse"][0] == start  # the logged loss is the PINN loss
    assert pinn["final_mse"] < start and pinn["flops"] >= 12 * pinn["flops_per_eval"]


def test_pinn_baselines_train_on_the_pinn_loss() -> None:
    """One GD step of the study against one step by hand on FirstOrderPINNLoss.pinn_loss."""
    lr = 0.1
    rec = execute(SolverRun("pinn4", "gd", lr, 0, 1, 1, "test"))
    loss = build_loss("pinn4", 0)
    params = loss.theta_parameters()
    grads = torch.autograd.grad(loss.pinn_loss(), params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= lr * g
    assert rec["solver"] is None and rec["iterations"] == 1
    assert rec["final_mse"] == pytest.approx(float(loss.pinn_loss(create_graph=False)),
                                             rel=1e-12)


def test_pinn_pipeline_end_to_end_through_the_cli(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    tiny = Size("pinn-quick", evals=3, checkpoints=1, tune_seeds=(0,), test_seeds=(310, 311),
                tasks=("pinn4",), family="pinn")
    monkeypatch.setitem(SIZES, "pinn-quick", tiny)
    solver_study.main(["--pinn-quick", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "runs.json").read_text())
    res = data["tasks"]["pinn4"]
    assert len(res["test"]) == 2 * 4
    assert {r["solver"] for r in res["test"] if r["spec"]["method"] == "bcd"} == {
        "PINNBlockCoordinateSolver"}
    assert set(res["selected"]["bcd"]["scores"]) == {"0.0001", "1e-06", "1e-08", "1e-10",
                                                     "1e-12", "1e-14"}
    an = data["analysis"]
    assert [(r["task"], r["baseline"], r["budget"]) for r in an["rows"]] == list(PINN_FAMILY)
    assert (an["family_run"], an["family_declared"]) == (6, 6)
    assert an["union_rows"] == len(FAMILY)
    # Holm over a superset of p-values adjusts no p-value down
    assert all(r["p_holm_union"] >= r["p_holm"] for r in an["rows"])
    text = (tmp_path / "summary.md").read_text()
    assert "6 of 6 rows run" in text and "final PINN loss" in text and "(24 rows)" in text
    # the report redraws from runs.json alone
    (tmp_path / "summary.md").unlink()
    solver_study.main(["--pinn-quick", "--out", str(tmp_path), "--report-only"])
    assert (tmp_path / "summary.md").read_text() == text


def test_long_family_repeats_the_regression_rows_on_fresh_seeds_with_committed_settings() -> None:
    """The long-budget family: the regression family's rows, 10x its budget, fresh test seeds,
    and the settings of a committed run that selected every method on every task."""
    assert LONG_FAMILY == FAMILY and FAMILIES["regression-long"] == FAMILY
    assert LONG.evals >= 10 * FULL.evals and LONG.evals >= 10_000
    assert len(LONG.test_seeds) >= 10 and not LONG.tune_seeds and LONG.tasks == TASKS
    used = {*FULL.tune_seeds, *FULL.test_seeds, *QUICK.test_seeds, *PINN.test_seeds,
            *PINN_QUICK.test_seeds, *EARLIER_TEST_SEEDS}
    for size in (LONG, LONG_QUICK):
        assert not set(size.test_seeds) & used
    assert not set(LONG.test_seeds) & set(LONG_QUICK.test_seeds)
    for task in LONG.tasks:
        selected = solver_study.selections_of(SELECTED_FROM, task)
        for method in ("bcd", *BASELINES):
            assert selected[method]["setting"] in GRIDS[method]


def test_long_pipeline_takes_the_committed_settings_and_workers_change_no_value(
        tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """The long size through the CLI on a tiny budget, once in this process and once with two
    worker processes: the same runs, the same values (only wall times may differ), every
    method at the setting the committed run selected, and the report redrawn from runs.json."""
    tiny = Size("long-quick", evals=3, checkpoints=1, tune_seeds=(), test_seeds=(320, 321),
                tasks=("reg4",), family="regression-long")
    monkeypatch.setitem(SIZES, "long-quick", tiny)
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        solver_study.main(["--long-quick", "--out", str(out), "--workers", str(workers)])
        runs[workers] = json.loads((out / "runs.json").read_text())
    committed = solver_study.selections_of(SELECTED_FROM, "reg4")
    for data in runs.values():
        res = data["tasks"]["reg4"]
        assert res["tune"] == [] and res["selected"] == committed
        assert [(r["spec"]["seed"], r["spec"]["method"], r["spec"]["setting"])
                for r in res["test"]] == [(s, m, committed[m]["setting"]) for s in (320, 321)
                                          for m in ("bcd", *BASELINES)]
        assert [(r["task"], r["baseline"], r["budget"]) for r in data["analysis"]["rows"]] == [
            row for row in FAMILY if row[0] == "reg4"]
        assert data["analysis"]["family_declared"] == len(FAMILY)
    one, two = (runs[w]["tasks"]["reg4"]["test"] for w in (1, 2))
    for a, b in zip(one, two, strict=True):
        assert a["final_mse"] == b["final_mse"] and a["flops"] == b["flops"]
        assert a["curves"]["mse"] == b["curves"]["mse"]
    text = (tmp_path / "w2" / "summary.md").read_text()
    assert "--long-quick --workers 2" in text and f"`{SELECTED_FROM}` run selected" in text
    (tmp_path / "w2" / "summary.md").unlink()
    solver_study.main(["--long-quick", "--out", str(tmp_path / "w2"), "--report-only"])
    assert (tmp_path / "w2" / "summary.md").read_text() == text


def test_followup_of_the_long_run_pairs_bcd_with_that_runs_seeds(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """solver_followup --size long: bcd at another rho on the long run's test seeds (worker
    processes), the same values as a run of its own, stored beside that run; tuning seeds,
    which the long run has none of, are refused."""
    tiny = Size("long", evals=3, checkpoints=1, tune_seeds=(), test_seeds=(320, 321),
                tasks=("reg4",), family="regression-long")
    monkeypatch.setitem(SIZES, "long", tiny)
    solver_study.main(["--long", "--out", str(tmp_path / "solvers-long")])
    monkeypatch.setattr(solver_followup, "DEFAULT_OUT", tmp_path)
    solver_followup.main(["--size", "long", "--rho", "1e-12", "--test", "--workers", "2"])
    store = json.loads((tmp_path / "solvers-long" / "followup.json").read_text())
    recs = store["reg4 bcd rho=1e-12 test"]
    assert [r["spec"]["seed"] for r in recs] == [320, 321]
    for r in recs:
        alone = execute(SolverRun("reg4", "bcd", 1e-12, r["spec"]["seed"], 3, 1, "test"))
        assert r["final_mse"] == alone["final_mse"] and r["flops"] == alone["flops"]
    with pytest.raises(SystemExit):
        solver_followup.main(["--size", "long", "--rho", "1e-12"])
