"""experiments.convergence: tasks run, configurations build the rule they name, the protocol
runs end to end on a tiny lattice, and the analysis pairs runs by seed."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from experiments.convergence import protocol
from experiments.convergence.analysis import analyse, paired, verdict
from experiments.convergence.config import FULL, QUICK, Config
from experiments.convergence.design import (
    COMPARISONS,
    FAMILIES,
    GROUPS,
    MIN_SEEDS,
    USED_TEST_SEEDS,
    members,
    n_seeds,
)
from experiments.convergence.optimizers import CONFIGS, make_optimizer
from experiments.convergence.plots import all_plots
from experiments.convergence.report import summary_markdown
from experiments.convergence.spec import RunSpec, execute
from experiments.convergence.tasks import TASK_NAMES, get_task


@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("optimizer", ["tmsgd_cos_w25", "ms_lead_m"])
def test_task_runs_and_gives_a_finite_metric(task: str, optimizer: str) -> None:
    rec = execute(RunSpec(task, optimizer, 0.01, 0, 6, "test", phase="final"))
    assert not rec["diverged"]
    assert math.isfinite(rec["final_metric"])
    assert rec["curves"]["step"][-1] == 6


def test_real_data_task_reads_the_shipped_csv() -> None:
    from experiments.convergence.tasks.ctr_fair import load

    ids, labels, cards = load()
    assert ids.shape == (6366, 8) and len(cards) == 8
    assert ids.max() == sum(cards) - 1  # global ids are dense
    assert 0.25 < labels.mean() < 0.40  # about a third report an affair


@pytest.mark.parametrize("name", ["ms_complex", "ms_lead", "tmsgd"])
def test_multistep_config_is_its_recursion(name: str) -> None:
    """W[k+1] = a0 W[k] + a1 W[k-1] + a2 W[k-2] - lr g[k] with W[-1] = W[-2] = W[0]."""
    a0, a1, a2 = CONFIGS[name].coefficients
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt, _ = make_optimizer(name, [w], 0.05, 20)
    hist = [w.detach().clone()] * 3
    for k in range(12):
        g = torch.tensor([math.sin(k), math.cos(2 * k)], dtype=torch.float64)
        w.grad = g.clone()
        opt.step()
        new = a0 * hist[-1] + a1 * hist[-2] + a2 * hist[-3] - 0.05 * g
        hist.append(new)
        torch.testing.assert_close(w.detach(), new, rtol=1e-12, atol=1e-12)


def test_warmup_steps_are_sgd_steps() -> None:
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    ref = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt, _ = make_optimizer("tmsgd_w25", [w], 0.1, 16)  # switch after 4 of 16 steps
    sgd = torch.optim.SGD([ref], lr=0.1)
    for k in range(6):
        for p in (w, ref):
            p.grad = torch.full((3,), float(k + 1), dtype=torch.float64)
        opt.step()
        sgd.step()
        assert torch.equal(w.detach(), ref.detach()) == (k < 4)


def test_cosine_schedule_matches_torch() -> None:
    w = torch.nn.Parameter(torch.ones(1))
    opt, sched = make_optimizer("sgd_cos", [w], 0.3, 10)
    peer_opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.3)
    peer = torch.optim.lr_scheduler.CosineAnnealingLR(peer_opt, T_max=10)
    for _ in range(10):
        opt.step()
        sched.step()
        peer_opt.step()
        peer.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(peer_opt.param_groups[0]["lr"])


def test_nesterov_config_is_torch_nesterov() -> None:
    opt, _ = make_optimizer("nesterov0.95", [torch.nn.Parameter(torch.ones(1))], 0.1, 5)
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.95


def test_design_is_complete() -> None:
    for task in TASK_NAMES:
        for group in GROUPS:
            assert all(c in CONFIGS for c in members(group, task))
    assert {g for pair in COMPARISONS for g in pair} <= set(GROUPS)
    assert n_seeds(len(TASK_NAMES)) >= MIN_SEEDS


def test_families_partition_the_comparisons() -> None:
    """Every comparison is in exactly one family; the paper's claim (TM-SGD vs SGD, with and
    without the warm-up) is the primary family and nothing else is."""
    flat = [c for f in FAMILIES.values() for c in f]
    assert len(flat) == len(set(flat)) == len(COMPARISONS)
    assert set(FAMILIES["primary"]) == {("tmsgd", "sgd"), ("tmsgd_warm", "sgd")}
    assert set(FAMILIES["momentum"]) == {("tmsgdm", "sgdm"), ("tmsgdm", "nesterov")}


def test_seeds_are_fresh_and_disjoint() -> None:
    """New test seeds were never test seeds before; quick and full test seeds are disjoint; no
    validation seed is a test seed; the full run selects lrs on at least 3 seeds."""
    assert not (set(FULL.final_seeds) | set(QUICK.final_seeds)) & USED_TEST_SEEDS
    assert not set(FULL.final_seeds) & set(QUICK.final_seeds)
    for cfg in (FULL, QUICK):
        assert not set(cfg.grid_seeds) & set(cfg.final_seeds)
    assert len(FULL.grid_seeds) >= 3
    assert len(FULL.final_seeds) == n_seeds(len(TASK_NAMES))


def test_selection_excludes_an_lr_that_diverged_on_any_validation_seed() -> None:
    assert protocol.score([1.0, 2.0, 3.0], True) == 2.0
    assert protocol.score([1.0, 2.0, 3.0], False) == -2.0
    assert protocol.score([1.0, None, 3.0], True) == -math.inf
    assert protocol.score([1.0, math.nan, 3.0], False) == -math.inf
    assert protocol.best_e({-4: 2.0, -2: -math.inf, -3: 2.0}) == -4  # tie: the smaller lr


def test_comparison_sides_search_each_others_best_lr() -> None:
    """TM-SGD's window reaches SGD's best coarse lr and the reverse; momentum methods at equal
    momentum share their windows; unrelated configurations keep their own."""
    best = {"sgd": 0, "tmsgd": -4, "sgdm0.9": -8, "nesterov0.9": -4, "tmsgdm0.9": -12,
            "adam": -20}
    names = ["sgd", "tmsgd", "tmsgd_w25", "sgdm0.9", "nesterov0.9", "tmsgdm0.9", "adam"]
    around = protocol.covered_anchors(names, best)
    assert around["sgd"] == around["tmsgd"] == around["tmsgd_w25"] == [-4, 0]
    assert around["sgdm0.9"] == around["nesterov0.9"] == around["tmsgdm0.9"] == [-12, -8, -4]
    assert around["adam"] == [-20]
    assert protocol.window(around["tmsgd"], 1) == [-5, -4, -3, -2, -1, 0, 1]


def test_anchors_keep_effective_lr_across_momenta() -> None:
    best = {"sgd": -4, "tmsgd": -6, "sgdm0.9": -8, "nesterov0.9": -9, "tmsgdm0.9": -10,
            "adam": -20}
    # lr / (1 - m) held: m 0.8 doubles the lr (two lattice points), m 0.95 halves it
    assert protocol.anchors("sgdm0.8", best) == [-6]
    assert protocol.anchors("nesterov0.95", best) == [-11]
    assert protocol.anchors("tmsgdm0.95", best) == [-12]
    assert protocol.anchors("tmsgd_w42", best) == [-6, -4]
    assert protocol.window([-6, -4], 1) == [-7, -6, -5, -4, -3]


def test_edge_step_extends_past_a_best_at_the_edge() -> None:
    inf = float("inf")
    assert protocol.edge_step({-3: 1.0, -2: 2.0, -1: 3.0}) == 0  # best is the largest lr
    assert protocol.edge_step({-3: 3.0, -2: 2.0, -1: -inf}) == -4  # best is the smallest lr
    assert protocol.edge_step({-3: 1.0, -2: 3.0, -1: 2.0}) is None  # bracketed
    assert protocol.edge_step({-3: -inf, -2: -inf}) == -4  # all diverged: go smaller


def _fake_task(seed_metrics: dict[str, list[float | None]]) -> dict:
    runs = []
    for group, values in seed_metrics.items():
        for seed, v in enumerate(values):
            runs.append({"spec": {"phase": "final", "optimizer": group, "seed": 100 + seed},
                         "e": 0, "final_metric": v})
    random.Random(0).shuffle(runs)  # pairing must follow the seed, not the order
    return {"runs": runs, "selected": {g: {"config": g, "e": 0, "lr": 1.0} for g in seed_metrics}}


def test_analysis_pairs_by_seed_and_corrects() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(90, 1, 12)
    metrics = {g: list(base + rng.normal(0, 0.1, 12)) for g in GROUPS}
    metrics["tmsgd"] = list(base + 0.5 + rng.normal(0, 0.1, 12))  # better on every seed
    result = analyse({"digits_cnn": _fake_task(metrics)})
    c = next(c for c in result["comparisons"] if (c["challenger"], c["baseline"]) ==
             ("tmsgd", "sgd"))
    ref = sps.ttest_rel(metrics["tmsgd"], metrics["sgd"]).pvalue
    assert c["p_t"] == pytest.approx(ref, rel=1e-10)
    assert c["wins"] == 12 and c["verdict"] == "better"
    assert c["family"] == "primary"
    # Holm within each family, and over all comparisons as the sensitivity line, as statsmodels
    comps = result["comparisons"]
    for family in FAMILIES:
        rows = [x for x in comps if x["family"] == family]
        ref = multipletests([x["p_t"] for x in rows], method="holm")[1]
        assert [x["p_holm"] for x in rows] == pytest.approx(list(ref), rel=1e-12)
    ref_all = multipletests([x["p_t"] for x in comps], method="holm")[1]
    assert [x["p_holm_all"] for x in comps] == pytest.approx(list(ref_all), rel=1e-12)
    assert c["p_holm"] < c["p_holm_all"]  # the primary family is smaller than all 8


def test_divergence_rule() -> None:
    ch = {s: (None if s < 4 else 1.0) for s in range(12)}
    c = paired("digits_cnn", ch, {s: 1.0 + 0.01 * s for s in range(12)})
    c["p_holm"] = 1.0
    assert verdict(c) == "worse (diverges)"


def test_protocol_end_to_end_on_a_tiny_lattice(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    task = get_task("ctr_fair")
    monkeypatch.setattr(type(task), "steps_quick", 4)
    cfg = Config("test", True, (0, 1), (300, 301), {"sgd": (-4,), "adam": (-12,)}, 0, 1, 50)
    res = protocol.run_task("ctr_fair", cfg, workers=1)
    assert set(res["selected"]) == set(GROUPS)
    n_final = sum(r["spec"]["phase"] == "final" for r in res["runs"])
    assert n_final <= 2 * len(GROUPS)  # a configuration chosen twice runs once
    per_lr = Counter((r["spec"]["optimizer"], r["e"]) for r in res["runs"]
                     if r["spec"]["split"] == "val")
    assert set(per_lr.values()) == {2}  # every lr tried ran on both validation seeds
    results = {"tasks": {"ctr_fair": res}, "config": cfg.__dict__, "wall_s": 0.0,
               "machine": "test"}
    results["analysis"] = analyse(results["tasks"])
    assert len(results["analysis"]["comparisons"]) == len(COMPARISONS)
    text = summary_markdown(results)
    assert "TM-SGD vs SGD" in text and "ctr_fair" in text
    assert all(f"Family '{f}'" in text for f in FAMILIES)
    assert (tmp_path / "paired_differences.png").exists() is False
    all_plots(results, tmp_path)
    assert (tmp_path / "paired_differences.png").exists()


def test_steps_factor_multiplies_every_budget() -> None:
    from dataclasses import replace

    for task in TASK_NAMES:
        t = get_task(task)
        assert protocol.steps_for(task, replace(FULL, steps_factor=4)) == 4 * t.steps_full
        assert protocol.steps_for(task, QUICK) == t.steps_quick


def test_budget_run_is_declared_fresh_and_restricted() -> None:
    """Issue 25's budget run: 4x every budget, only the primary and momentum families' groups
    (no Adam, no cosine, no other three-step rule), 3 validation seeds, test seeds no other
    run of this loop used (the full and quick runs, issue 15's runs, the 8-bit study's 400-411)."""
    from experiments.convergence.config import BUDGET
    from experiments.convergence.design import (
        BUDGET_NEW_TASKS,
        BUDGET_TASKS,
        budget_test_seeds,
        groups_for,
    )

    assert BUDGET.steps_factor == 4 and BUDGET.families == ("primary", "momentum")
    assert groups_for(BUDGET.families) == ("sgd", "sgdm", "nesterov", "tmsgd", "tmsgdm",
                                           "tmsgd_warm")
    assert groups_for(tuple(FAMILIES)) == tuple(GROUPS)  # the full design keeps Adam
    seeds = set(BUDGET.final_seeds)
    assert BUDGET.final_seeds == budget_test_seeds()
    assert len(seeds) == n_seeds(len(BUDGET_TASKS), BUDGET.families) >= MIN_SEEDS
    others = set(FULL.final_seeds) | set(QUICK.final_seeds) | USED_TEST_SEEDS | set(range(400, 412))
    assert not seeds & others and not seeds & set(BUDGET.grid_seeds)
    assert len(BUDGET.grid_seeds) >= 3
    assert set(BUDGET_TASKS) <= set(TASK_NAMES)
    assert set(BUDGET_NEW_TASKS) <= set(TASK_NAMES)
    assert not set(BUDGET_NEW_TASKS) & set(BUDGET_TASKS)
    # the make target that runs the new task names exactly the declared tasks
    make = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    recipe = make.split("experiments-budget-insteval: setup", 1)[1].split("\n\n", 1)[0]
    assert recipe.split("--tasks", 1)[1].split("\\")[0].split() == list(BUDGET_NEW_TASKS)


def test_holm_counts_a_declared_task_not_run_with_p_one() -> None:
    """A family's correction is as strict as declared: a declared task that did not run adds
    its comparisons with p = 1 (statsmodels' Holm over the padded list)."""
    rng = np.random.default_rng(1)
    base = rng.normal(90, 1, 12)
    metrics = {g: list(base + rng.normal(0, 0.3, 12)) for g in GROUPS}
    metrics["tmsgd"] = list(base + 0.4 + rng.normal(0, 0.3, 12))
    tasks = {"digits_cnn": _fake_task(metrics)}
    fams = ("primary", "momentum")
    full = analyse(tasks, fams, ("digits_cnn", "keypoints"))
    assert full["family_sizes"] == {"primary": 4, "momentum": 4}
    assert full["family_run"] == {"primary": 2, "momentum": 2}
    assert {c["family"] for c in full["comparisons"]} == set(fams)
    for family in fams:
        rows = [c for c in full["comparisons"] if c["family"] == family]
        ref = multipletests([c["p_t"] for c in rows] + [1.0, 1.0], method="holm")[1][:2]
        assert [c["p_holm"] for c in rows] == pytest.approx(list(ref), rel=1e-12)
    ref_all = multipletests([c["p_t"] for c in full["comparisons"]] + [1.0] * 4,
                            method="holm")[1][:4]
    assert [c["p_holm_all"] for c in full["comparisons"]] == pytest.approx(list(ref_all))
    alone = analyse(tasks, fams)  # declared = run: no padding, a smaller correction
    tm = next(c for c in alone["comparisons"] if c["challenger"] == "tmsgd")
    tm_full = next(c for c in full["comparisons"] if c["challenger"] == "tmsgd")
    assert tm["p_holm"] < tm_full["p_holm"]
    with pytest.raises(ValueError, match="not declared"):
        analyse(tasks, fams, ("keypoints",))


def test_restricted_protocol_searches_only_its_families_groups(monkeypatch) -> None:  # noqa: ANN001
    from dataclasses import replace

    task = get_task("ctr_fair")
    monkeypatch.setattr(type(task), "steps_quick", 4)
    cfg = Config("test", True, (0,), (300,), {"sgd": (-4,), "adam": (-12,)}, 0, 0, 50)
    res = protocol.run_task("ctr_fair", replace(cfg, families=("primary",)), workers=1)
    assert set(res["selected"]) == {"sgd", "tmsgd", "tmsgd_warm"}
    tried = {r["spec"]["optimizer"] for r in res["runs"]}
    assert "adam" not in tried and not any(n.startswith(("ms_", "tmsgdm")) for n in tried)


def test_anchored_by_names_every_coarse_family_anchors_reads() -> None:
    """anchors() succeeds with exactly the coarse families anchored_by() names, for every
    configuration of every group (so a restricted run skips only coarse runs nobody reads)."""
    best_all = {"sgd": -4, "tmsgd": -6, "sgdm0.9": -8, "nesterov0.9": -9, "tmsgdm0.9": -10,
                "adam": -20}
    for task in TASK_NAMES:
        for group in GROUPS:
            for name in members(group, task):
                need = protocol.anchored_by(name)
                assert protocol.anchors(name, {f: best_all[f] for f in need})
                for f in need:
                    with pytest.raises(KeyError):
                        protocol.anchors(name, {k: best_all[k] for k in need - {f}})


def test_runs_joined_are_corrected_over_the_union_of_each_family(tmp_path) -> None:  # noqa: ANN001
    """combined.joined: Holm over one family's comparisons from every run, with each run's
    declared-but-unrun comparisons at p = 1, as statsmodels over the same list."""
    import json

    from experiments.convergence import combined

    rng = np.random.default_rng(2)
    fams = ("primary", "momentum")
    analyses = []
    for task, declared in (("keypoints", ("keypoints", "gan2d")), ("digits_cnn", None)):
        base = rng.normal(1, 0.1, 10)
        metrics = {g: list(base + rng.normal(0, 0.05, 10)) for g in GROUPS}
        metrics["tmsgd"] = list(base - 0.05 + rng.normal(0, 0.05, 10))
        analyses.append(analyse({task: _fake_task(metrics)}, fams, declared))
    rows = combined.joined(analyses)
    for family in fams:
        mine = [c for c in rows if c["family"] == family]
        assert len(mine) == 4
        ref = multipletests([c["p_t"] for c in mine] + [1.0, 1.0], method="holm")[1][:4]
        assert [c["p_holm_joined"] for c in mine] == pytest.approx(list(ref), rel=1e-12)
        assert all(c["p_holm_joined"] >= c["p_holm"] for c in mine)
    for i, a in enumerate(analyses):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "runs.json").write_text(json.dumps({"analysis": a}))
    assert combined.main([str(tmp_path / "0"), str(tmp_path / "1")]) == 0


def test_resume_runs_only_the_declared_tasks_an_interrupted_run_lacks(tmp_path, monkeypatch) -> None:  # noqa: ANN001, E501
    """``--resume`` keeps the finished tasks' results, runs the rest, and refuses a different
    run (another task list) rather than mixing two protocols in one report."""
    import json

    from experiments.convergence import cli

    calls: list[str] = []

    def fake_run_task(task: str, config: Config, workers: int) -> dict:
        calls.append(task)
        if task == "keypoints" and calls.count(task) == 1:
            raise KeyboardInterrupt  # the machine stops mid-task
        return {"result_of": task, "steps_factor": config.steps_factor}

    def plain_write(results: dict, out: Path) -> None:
        (out / "runs.json").write_text(json.dumps(results, default=str))
        (out / "summary.md").write_text("")

    monkeypatch.setattr(cli, "run_task", fake_run_task)
    monkeypatch.setattr(cli, "write", plain_write)
    argv = ["--no-theory", "--workers", "1", "--tasks", "ctr_fair", "keypoints",
            "--out", str(tmp_path)]
    with pytest.raises(KeyboardInterrupt):
        cli.main(argv)
    saved = json.loads((tmp_path / "runs.json").read_text())
    assert list(saved["tasks"]) == ["ctr_fair"] and not saved["complete"]
    with pytest.raises(SystemExit):  # another declaration cannot resume this run
        cli.main(["--no-theory", "--tasks", "ctr_fair", "gan2d", "--out", str(tmp_path),
                  "--resume"])
    assert cli.main([*argv, "--resume"]) == 0
    assert calls == ["ctr_fair", "keypoints", "keypoints"]  # ctr_fair ran once
    done = json.loads((tmp_path / "runs.json").read_text())
    assert done["complete"] and done["command"] == " ".join(argv)
    assert done["tasks"] == {"ctr_fair": {"result_of": "ctr_fair", "steps_factor": 1},
                             "keypoints": {"result_of": "keypoints", "steps_factor": 1}}
    assert [r["after"] for r in done["resumed"]] == [["ctr_fair"]]
    with pytest.raises(SystemExit):  # a complete run has nothing to resume
        cli.main([*argv, "--resume"])
