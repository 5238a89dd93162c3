"""The theory section, computed: each rule as a filter of the gradient sequence, its stability
limit on a quadratic, and its speed on ill-conditioned quadratics at its best lr, each limit and
speed checked by running the real optimizer (torch.optim.SGD or TMSGD) on the quadratic.

    python -m experiments.convergence.theory [--quick] [--out DIR]

Writes theory.json, theory.md and filter_gain.png to DIR (default docs/experiments/<mode>).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .linear import Rule, best_rate, efold_iterations, stability_limit
from .optimizers import CONFIGS, make_optimizer

MAIN_RULES = ("sgd", "sgdm0.9", "nesterov0.9", "tmsgd", "tmsgdm0.9")
N_DIMS = 50


def rule_of(name: str) -> Rule:
    c = CONFIGS[name]
    return Rule(c.b[0], c.b[1], c.momentum, c.nesterov)


def linear_rules(quick: bool) -> list[str]:
    """Configurations that are linear, constant-lr rules (no Adam, schedule or warm-up)."""
    if quick:
        return list(MAIN_RULES)
    return [n for n, c in CONFIGS.items()
            if c.rule != "adam" and c.schedule == "constant" and c.warmup == 0.0]


def filter_row(rule: Rule) -> dict[str, float]:
    omega = np.linspace(1e-3, math.pi, 4000)
    gain = np.abs(rule.response(omega)) / abs(rule.dc_gain())
    k = int(np.argmax(gain))
    return {
        "dc_gain": rule.dc_gain(),
        "gain_alternating": float(np.abs(rule.response(math.pi)) / abs(rule.dc_gain())),
        "peak_gain": float(gain[k]),
        "peak_period": float(2 * math.pi / omega[k]),
        "noise_gain": rule.noise_gain(),
        "lead_steps": rule.lead(),
    }


def quadratic(lams: np.ndarray, seed: int = 0) -> tuple[torch.Tensor, torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    lam = torch.as_tensor(lams, dtype=torch.float64)
    return lam, torch.nn.Parameter(torch.randn(len(lams), generator=gen, dtype=torch.float64))


def trajectory(name: str, lr: float, lams: np.ndarray, steps: int) -> np.ndarray:
    """log ||w|| after each of ``steps`` full-gradient steps of the real optimizer ``name`` on
    f(w) = sum(lams * w^2) / 2, stopping early on overflow or underflow."""
    lam, w = quadratic(lams)
    opt, _ = make_optimizer(name, [w], lr, steps)
    out = []
    for _ in range(steps):
        w.grad = lam * w.detach()
        opt.step()
        norm = float(w.detach().norm())
        if not math.isfinite(norm) or norm == 0.0 or norm > 1e150 or norm < 1e-250:
            break
        out.append(math.log(norm))
    return np.asarray(out)


def measured_limit(name: str, theory_h: float, steps: int, curvature: float = 10.0,
                   iters: int = 8) -> float:
    """Largest lr * L at which the real optimizer's error norm ends below its start on a
    quadratic with curvatures in [0.01 L, L], bisected in [0.9, 1.1] x the theory's limit;
    NaN when the bracket does not hold."""
    lams = np.linspace(0.01, 1.0, N_DIMS) * curvature

    def stable(h: float) -> bool:
        traj = trajectory(name, h / curvature, lams, steps)
        start = float(quadratic(lams)[1].detach().norm())
        return len(traj) == steps and traj[-1] < math.log(start)

    lo, hi = 0.9 * theory_h, 1.1 * theory_h
    if not stable(lo) or stable(hi):
        return math.nan
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if stable(mid) else (lo, mid)
    return lo


def measured_efold(name: str, lr: float, kappa: float, steps: int) -> float:
    """Iterations per e-fold of the error norm, fitted over the second half of the run."""
    traj = trajectory(name, lr, np.geomspace(1.0 / kappa, 1.0, N_DIMS), steps)
    half = traj[len(traj) // 2:]
    if len(half) < 10:
        return math.nan
    slope = np.polyfit(np.arange(len(half)), half, 1)[0]
    return math.inf if slope >= 0 else -1.0 / slope


def compute(quick: bool, steps: int) -> dict[str, Any]:
    kappas = (100.0,) if quick else (100.0, 1000.0)
    rows = []
    for name in linear_rules(quick):
        rule = rule_of(name)
        h = stability_limit(rule)
        row: dict[str, Any] = {"config": name, "b": CONFIGS[name].b,
                               "momentum": rule.m, "nesterov": rule.nesterov,
                               **filter_row(rule), "h_max": h,
                               "h_max_measured": measured_limit(name, h, steps), "kappa": {}}
        for kappa in kappas:
            lr, rate = best_rate(rule, kappa)
            row["kappa"][str(int(kappa))] = {
                "best_lr_times_L": lr, "rate": rate, "efold": efold_iterations(rate),
                "efold_measured": measured_efold(name, lr, kappa, steps),
            }
        rows.append(row)
    return {"steps": steps, "kappas": kappas, "rows": rows}


def markdown(theory: dict[str, Any]) -> str:
    rows = theory["rows"]
    lines = [
        "### Filter view (per unit effective lr: gains divided by the gain on a constant "
        "gradient)",
        "| rule | (b1, b2), m | constant-gradient gain | gain at alternating gradient | peak "
        "gain (period, steps) | white-noise power vs SGD | look-ahead (steps) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mom = f"{r['momentum']:g}" + (" Nesterov" if r["nesterov"] else "")
        # a peak at the lowest frequency sampled is the constant-gradient gain itself
        peak = ("1 (constant gradient)" if r["peak_period"] > 1000
                else f"{r['peak_gain']:.3f} ({r['peak_period']:.1f})")
        lines.append(
            f"| {r['config']} | ({r['b'][0]:g}, {r['b'][1]:g}), {mom} | {r['dc_gain']:.3g} "
            f"| {r['gain_alternating']:.3f} | {peak} "
            f"| {r['noise_gain']:.3f} | {r['lead_steps']:+.2f} |")
    lines += [
        "",
        "### Stability limit and speed on quadratics",
        "Limit: largest lr·L with every curvature in [0, L] stable (theory: spectral radius; "
        f"measured: the real optimizer, {theory['steps']} steps, error ends below its start). "
        "Speed: curvatures in [L/κ, L], the lr that minimizes the worst per-step rate; "
        "iterations per e-fold of the error, theory and measured (fit over the run's second "
        "half).",
        "| rule | max lr·L theory | measured | " + " | ".join(
            f"κ={k}: best lr·L | κ={k}: iterations per e-fold (measured)"
            for k in rows[0]["kappa"]) + " |",
        "|---|---|---|" + "---|---|" * len(rows[0]["kappa"]),
    ]
    for r in rows:
        cells = [f"{v['best_lr_times_L']:.3g} | {v['efold']:.1f} ({v['efold_measured']:.1f})"
                 for v in r["kappa"].values()]
        lines.append(f"| {r['config']} | {r['h_max']:.4f} | {r['h_max_measured']:.4f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    omega = np.linspace(1e-3, math.pi, 1000)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name in MAIN_RULES:
        r = rule_of(name)
        ax.plot(2 * math.pi / omega, np.abs(r.response(omega)) / abs(r.dc_gain()), label=name)
    ax.set(xscale="log", yscale="log", xlabel="period of the gradient component (steps)",
           ylabel="gain / constant-gradient gain", title="update as a filter of the gradient")
    ax.axhline(1.0, color="k", lw=0.6)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "filter_gain.png", dpi=80)
    plt.close(fig)


def write(out: Path, quick: bool, steps: int) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    theory = compute(quick, steps)
    (out / "theory.json").write_text(json.dumps(theory, indent=1))
    (out / "theory.md").write_text(markdown(theory))
    plot(out)
    return theory


def main(argv: list[str] | None = None) -> int:
    from .config import FULL, QUICK

    p = argparse.ArgumentParser(prog="python -m experiments.convergence.theory",
                                description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    config = QUICK if args.quick else FULL
    out = args.out or Path(__file__).resolve().parents[2] / "docs" / "experiments" / config.mode
    torch.set_num_threads(1)
    write(out, args.quick, config.quadratic_steps)
    print((out / "theory.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
