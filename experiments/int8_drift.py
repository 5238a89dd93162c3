"""How far an 8-bit history (history_dtype=torch.int8) moves training from an fp32 history.

1. A quadratic f(w) = sum(h_i w_i^2) / 2, 64 x 256 weights, curvatures h uniform in [0.01, 1],
   lr 0.5 (TM-SGD's stable range is lr * h < 1), 1500 steps from w ~ N(0, 1). Gradients h * w,
   plus Gaussian noise drawn in advance in the noisy variant (both runs see the same noise). The
   drift is ||w_x - w_fp32|| / ||w_fp32|| at the end, for the paper's coefficients with int8 and
   bf16 history, and for heavy-ball momentum 0.9 written as coefficients (1.9, -0.9, 0) with
   int8 history at lr 0.05 (the same long-run speed: its gain on a constant direction is 10).
   The paper's coefficients make a stored error's long-run effect on w zero; heavy ball's is 9
   times the error (int8_history.error_factor).
2. Training: an MLP (64-128-64-10) on scikit-learn's digits, 1000 steps of minibatch TM-SGD
   (paper coefficients, lr 0.1), fp32 params; fp32 and int8 history see the same init and
   batches (paired seeds). Test accuracy difference per seed, and the relative weight drift at
   step 25.

    python -m experiments.int8_drift [--seeds 12] [--out bench/results/int8_history.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import warnings

import torch

from tmsgd_kernels import TMSGD

PAPER = (1.5, -1.0, 0.5)
HEAVY_BALL = (1.9, -0.9, 0.0)


def quadratic_drift(coefficients: tuple[float, float, float], history: torch.dtype, seed: int,
                    noise: float, lr: float = 0.5, steps: int = 1500,
                    backend: str = "auto") -> float:
    """Relative drift of a run with `history` from the fp32-history run (module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    curvature = torch.empty(64, 256).uniform_(0.01, 1.0, generator=generator)
    start = torch.randn(64, 256, generator=generator)
    weights = {}
    for kind in (None, history):
        w = torch.nn.Parameter(start.clone())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # heavy ball's error-factor warning
            optimizer = TMSGD([w], lr=lr, coefficients=coefficients, history_dtype=kind,
                              backend=backend)
        noise_generator = torch.Generator().manual_seed(seed + 1)
        for _ in range(steps):
            w.grad = curvature * w.detach()
            if noise:
                w.grad += noise * torch.randn(64, 256, generator=noise_generator)
            optimizer.step()
        weights[kind] = w.detach()
    return ((weights[history] - weights[None]).norm() / weights[None].norm()).item()


def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order[:1500]], y[order[:1500]], x[order[1500:]], y[order[1500:]]


def digits_pair(seed: int, steps: int = 1000, backend: str = "auto") -> dict:
    """Test accuracy (%) with fp32 and int8 history, and the relative drift at step 25."""
    train_x, train_y, test_x, test_y = _digits()
    torch.manual_seed(seed)
    init = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 10))
    result = {}
    snapshots = {}
    for history in (None, torch.int8):
        model = copy.deepcopy(init)
        optimizer = TMSGD(model.parameters(), lr=0.1, history_dtype=history, backend=backend)
        batches = torch.Generator().manual_seed(seed + 1000)
        for step in range(steps):
            index = torch.randint(0, len(train_x), (64,), generator=batches)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(train_x[index]), train_y[index]).backward()
            optimizer.step()
            if step == 24:
                snapshots[history] = torch.cat([p.detach().flatten()
                                                for p in model.parameters()])
        with torch.no_grad():
            accuracy = (model(test_x).argmax(1) == test_y).float().mean().item() * 100
        result["fp32" if history is None else "int8"] = accuracy
    reference = snapshots[None]
    result["drift_at_25"] = ((snapshots[torch.int8] - reference).norm()
                             / reference.norm()).item()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--out", default=None)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    quadratic = {}
    for noise in (0.0, 0.01):
        for name, coefficients, history, lr in (
                ("paper, int8", PAPER, torch.int8, 0.5),
                ("paper, bf16", PAPER, torch.bfloat16, 0.5),
                ("heavy ball 0.9, int8", HEAVY_BALL, torch.int8, 0.05)):
            values = [quadratic_drift(coefficients, history, seed, noise, lr,
                                      backend=args.backend)
                      for seed in range(5)]
            key = f"{name}, noise {noise}"
            quadratic[key] = {"drift": values, "median": statistics.median(values)}
            print(f"quadratic {key}: drift median {statistics.median(values):.3g} "
                  f"({min(values):.3g}-{max(values):.3g})", flush=True)
    digits = [digits_pair(seed, backend=args.backend) for seed in range(args.seeds)]
    differences = [d["int8"] - d["fp32"] for d in digits]
    from scipy.stats import wilcoxon

    nonzero = [d for d in differences if d != 0]
    p_value = wilcoxon(nonzero).pvalue if len(nonzero) > 1 else 1.0
    print(f"digits: int8 - fp32 test accuracy, median {statistics.median(differences):+.3f} "
          f"points ({min(differences):+.3f} to {max(differences):+.3f}), Wilcoxon p "
          f"{p_value:.3g} over {len(nonzero)} non-zero pairs; drift at step 25: max "
          f"{max(d['drift_at_25'] for d in digits):.3g}")
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"quadratic": quadratic, "digits": digits,
                       "digits_accuracy_difference": differences,
                       "digits_wilcoxon_p": p_value}, file, indent=1)


if __name__ == "__main__":
    main()
