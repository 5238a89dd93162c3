"""How far an 8-bit history moves training from an fp32 history, on a noisy quadratic where the
answer is known: f(w) = sum(h_i w_i^2) / 2 with curvatures h spread over [0.01, 1], gradients
h * w plus Gaussian noise drawn in advance (both runs see the same noise), lr 0.5 (TM-SGD's stable
range is lr * h < 1).

The drift is ||w_int8 - w_fp32|| / ||w_fp32 - w_star|| after the run: the difference between the
two histories' weights against the fp32 run's distance from the optimum w_star = 0. Coefficient
sets whose storage errors wash out (the paper's: error factor (b1 + b2) / (1 - b1 - b2) = 0) drift
little; heavy-ball momentum written as coefficients (1 + m, -m, 0) has factor m / (1 - m) and
drifts more: the comparison shows the guard in int8_history.MAX_ERROR_FACTOR is about something.

    python -m experiments.int8_drift [--steps 1500] [--seeds 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings

import torch

from tmsgd_kernels import TMSGD

PAPER = (1.5, -1.0, 0.5)
HEAVY_BALL = (1.9, -0.9, 0.0)


def drift(coefficients: tuple[float, float, float], seed: int, steps: int = 1500,
          rows: int = 64, per_row: int = 256, lr: float = 0.5, noise: float = 0.1) -> float:
    """Relative drift of an int8-history run from an fp32-history run (module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    curvature = torch.empty(rows, per_row).uniform_(0.01, 1.0, generator=generator)
    start = torch.randn(rows, per_row, generator=generator)
    weights = {}
    for history in (None, torch.int8):
        w = torch.nn.Parameter(start.clone())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # heavy ball's error-factor warning
            optimizer = TMSGD([w], lr=lr, coefficients=coefficients, history_dtype=history,
                              backend="torch")
        noise_generator = torch.Generator().manual_seed(seed + 1)
        for _ in range(steps):
            w.grad = curvature * w.detach() + noise * torch.randn(
                rows, per_row, generator=noise_generator)
            optimizer.step()
        weights[history] = w.detach()
    return ((weights[torch.int8] - weights[None]).norm() / weights[None].norm()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = {}
    for name, coefficients in (("paper", PAPER), ("heavy_ball_0.9", HEAVY_BALL)):
        values = [drift(coefficients, seed, args.steps) for seed in range(args.seeds)]
        results[name] = {"coefficients": coefficients, "drift": values,
                         "median": statistics.median(values)}
        print(f"{name}: drift median {results[name]['median']:.3g} "
              f"(seeds {min(values):.3g}-{max(values):.3g})")
    ratio = results["heavy_ball_0.9"]["median"] / results["paper"]["median"]
    print(f"heavy ball / paper: {ratio:.1f}x")
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"steps": args.steps, "results": results, "ratio": ratio}, file, indent=1)


if __name__ == "__main__":
    main()
