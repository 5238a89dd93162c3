"""How far an 8-bit history (history_dtype=torch.int8) moves training from an fp32 history.

1. A quadratic f(w) = sum(h_i w_i^2) / 2, 64 x 256 weights, curvatures h uniform in [0.01, 1],
   lr 0.5 (TM-SGD's stable range is lr * h < 1), 1500 steps from w ~ N(0, 1). Gradients h * w,
   plus Gaussian noise drawn in advance in the noisy variant (both runs see the same noise). The
   drift is ||w_x - w_fp32|| / ||w_fp32|| at the end, for the paper's coefficients with int8 and
   bf16 history, and for heavy-ball momentum 0.9 written as coefficients (1.9, -0.9, 0) with
   int8 history at lr 0.05 (the same long-run speed: its gain on a constant direction is 10).
   The paper's coefficients make a stored error's long-run effect on w zero; heavy ball's is 9
   times the error (int8_history.error_factor).
   8-bit momentum buffers (momentum_dtype=torch.int8): TM-SGD-M (paper coefficients, momentum
   0.9, lr 0.05) with an int8 history, with and without an int8 buffer, and SGD-M 0.9 with an
   int8 buffer (coefficients (1, 0, 0): what bitsandbytes' 8-bit SGD stores), each against the
   same optimizer with fp32 state.
2. Training: an MLP (64-128-64-10) on scikit-learn's digits, 1000 steps of minibatch TM-SGD
   (paper coefficients, lr 0.1), fp32 params; fp32 and int8 history see the same init and
   batches (paired seeds). Test accuracy difference per seed, and the relative weight drift at
   step 25. The same for TM-SGD-M (momentum 0.9, lr 0.01) with an int8 history, and with an
   int8 history and int8 buffers.

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
SGD = (1.0, 0.0, 0.0)
INT8_BUFFER = {"history_dtype": torch.int8, "momentum_dtype": torch.int8}


def quadratic_drift(coefficients: tuple[float, float, float], history: torch.dtype, seed: int,
                    noise: float, lr: float = 0.5, steps: int = 1500,
                    backend: str = "auto", momentum: float = 0.0,
                    momentum_dtype: torch.dtype | None = None) -> float:
    """Relative drift of a run with `history` (and `momentum_dtype`) from the run with fp32
    state (module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    curvature = torch.empty(64, 256).uniform_(0.01, 1.0, generator=generator)
    start = torch.randn(64, 256, generator=generator)
    weights = {}
    for kind in (None, history):
        w = torch.nn.Parameter(start.clone())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # heavy ball's error-factor warning
            optimizer = TMSGD([w], lr=lr, coefficients=coefficients, history_dtype=kind,
                              momentum=momentum, backend=backend,
                              momentum_dtype=momentum_dtype if kind is not None else None)
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


STATES = {"fp32": {}, "int8": {"history_dtype": torch.int8}, "int8_buffer": INT8_BUFFER}


def digits_pair(seed: int, steps: int = 1000, backend: str = "auto", momentum: float = 0.0,
                lr: float = 0.1, states: tuple[str, ...] = ("fp32", "int8")) -> dict:
    """Test accuracy (%) per state (STATES; the first is the reference) and each other state's
    relative drift from it at step 25 ("drift_at_25" for "int8", "drift_at_25_<state>" else)."""
    train_x, train_y, test_x, test_y = _digits()
    torch.manual_seed(seed)
    init = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 10))
    result = {}
    snapshots = {}
    for state in states:
        model = copy.deepcopy(init)
        optimizer = TMSGD(model.parameters(), lr=lr, momentum=momentum, backend=backend,
                          **STATES[state])
        batches = torch.Generator().manual_seed(seed + 1000)
        for step in range(steps):
            index = torch.randint(0, len(train_x), (64,), generator=batches)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(train_x[index]), train_y[index]).backward()
            optimizer.step()
            if step == 24:
                snapshots[state] = torch.cat([p.detach().flatten()
                                              for p in model.parameters()])
        with torch.no_grad():
            accuracy = (model(test_x).argmax(1) == test_y).float().mean().item() * 100
        result[state] = accuracy
    reference = snapshots[states[0]]
    for state in states[1:]:
        key = "drift_at_25" if state == "int8" else f"drift_at_25_{state}"
        result[key] = ((snapshots[state] - reference).norm() / reference.norm()).item()
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
        for name, coefficients, states in (
                ("TM-SGD-M 0.9, int8 history", PAPER, {"history_dtype": torch.int8}),
                ("TM-SGD-M 0.9, int8 history + int8 buffer", PAPER, INT8_BUFFER),
                ("SGD-M 0.9, int8 buffer", SGD, INT8_BUFFER)):
            values = [quadratic_drift(coefficients, states["history_dtype"], seed, noise,
                                      lr=0.05, backend=args.backend, momentum=0.9,
                                      momentum_dtype=states.get("momentum_dtype"))
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
    momentum_runs = [digits_pair(seed, backend=args.backend, momentum=0.9, lr=0.01,
                                 states=("fp32", "int8", "int8_buffer"))
                     for seed in range(args.seeds)]
    momentum_summary = {}
    for state in ("int8", "int8_buffer"):
        state_differences = [d[state] - d["fp32"] for d in momentum_runs]
        state_nonzero = [d for d in state_differences if d != 0]
        drift_key = "drift_at_25" if state == "int8" else f"drift_at_25_{state}"
        momentum_summary[state] = {
            "accuracy_difference": state_differences,
            "wilcoxon_p": wilcoxon(state_nonzero).pvalue if len(state_nonzero) > 1 else 1.0,
            "max_drift_at_25": max(d[drift_key] for d in momentum_runs)}
        print(f"digits TM-SGD-M 0.9, {state} - fp32: median "
              f"{statistics.median(state_differences):+.3f} points "
              f"({min(state_differences):+.3f} to {max(state_differences):+.3f}), Wilcoxon p "
              f"{momentum_summary[state]['wilcoxon_p']:.3g} over {len(state_nonzero)} non-zero "
              f"pairs; drift at step 25: max {momentum_summary[state]['max_drift_at_25']:.3g}")
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"quadratic": quadratic, "digits": digits,
                       "digits_accuracy_difference": differences,
                       "digits_wilcoxon_p": p_value, "digits_momentum": momentum_runs,
                       "digits_momentum_summary": momentum_summary,
                       "backend": args.backend, "torch": torch.__version__}, file, indent=1)


if __name__ == "__main__":
    main()
