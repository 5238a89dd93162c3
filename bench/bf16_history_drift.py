"""How far does TM-SGD with bf16 history (history_dtype=torch.bfloat16) drift from fp32 history?

A real small model: an MLP (64-128-64-10, 17K params) on scikit-learn's bundled digits data set
(1,797 8x8 images, no download), 1,000 steps of minibatch TM-SGD (paper coefficients), fp32
params. Three runs see exactly the same batches:
    fp32      history_dtype=None (fp32)
    bf16      history_dtype=torch.bfloat16
    fp32+ulp  fp32 history, the initial weights perturbed by one fp32 ulp (the scale of drift
              that any rounding difference causes in training: the reference for "small")
Per step it records the relative parameter distance ||W_x - W_fp32|| / ||W_fp32|| and the training
loss; at the end, test accuracy. Writes bench/results/bf16_history_drift.json and .png.

    python bench/bf16_history_drift.py [--steps 1000] [--backend auto] [--momentum 0.9]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine  # noqa: E402

from tmsgd_kernels import TMSGD  # noqa: E402
from tmsgd_kernels.implementations import choose  # noqa: E402


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    split = 1500
    return x[:split], y[:split], x[split:], y[split:]


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--out", type=Path, default=Path("bench/results/bf16_history_drift.json"))
    args = parser.parse_args()
    backend = choose(args.backend, torch.device("cpu"))

    x_train, y_train, x_test, y_test = digits()
    runs = {}
    for name, history_dtype, perturb in (("fp32", None, False), ("bf16", torch.bfloat16, False),
                                         ("fp32+ulp", None, True)):
        model = make_model()
        if perturb:
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
        optimizer = TMSGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                          history_dtype=history_dtype, backend=backend)
        runs[name] = (model, optimizer)

    batches = torch.Generator().manual_seed(1)
    record = {name: {"relative_distance": [], "loss": []} for name in runs}
    for _ in range(args.steps):
        index = torch.randint(0, len(x_train), (args.batch,), generator=batches)
        for name, (model, optimizer) in runs.items():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            loss.backward()
            optimizer.step()
            record[name]["loss"].append(loss.item())
        reference = flat(runs["fp32"][0])
        for name, (model, _) in runs.items():
            distance = (flat(model) - reference).norm() / reference.norm()
            record[name]["relative_distance"].append(distance.item())

    summary = {}
    with torch.no_grad():
        for name, (model, _) in runs.items():
            accuracy = (model(x_test).argmax(1) == y_test).double().mean().item()
            losses = record[name]["loss"]
            summary[name] = {
                "final_relative_distance_to_fp32": record[name]["relative_distance"][-1],
                "max_relative_distance_to_fp32": max(record[name]["relative_distance"]),
                "final_train_loss_mean_last_50": sum(losses[-50:]) / 50,
                "test_accuracy": accuracy,
            }
    info = machine()
    result = {"machine": info, "backend": backend, "steps": args.steps, "batch": args.batch,
              "lr": args.lr, "momentum": args.momentum, "params": flat(runs["fp32"][0]).numel(),
              "summary": summary, "per_step": record}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    _plot(record, args.out.with_suffix(".png"), args)

    print(f"bf16 vs fp32 history, MLP on digits ({result['params']} params), {args.steps} steps, "
          f"lr {args.lr}, momentum {args.momentum}, backend {backend}")
    print(f"{'run':>9} {'||W-W_fp32||/||W_fp32||':>24} {'max over steps':>15} "
          f"{'loss(last 50)':>14} {'test acc':>9}")
    for name, s in summary.items():
        print(f"{name:>9} {s['final_relative_distance_to_fp32']:>24.3e} "
              f"{s['max_relative_distance_to_fp32']:>15.3e} "
              f"{s['final_train_loss_mean_last_50']:>14.4f} {s['test_accuracy']:>9.4f}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def _plot(record: dict, path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in ("bf16", "fp32+ulp"):
        ax.semilogy(range(1, args.steps + 1),
                    [max(v, 1e-12) for v in record[name]["relative_distance"]], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("||W - W_fp32 history|| / ||W_fp32 history||")
    ax.set_title("TM-SGD: drift of bf16 history from fp32 history (MLP, digits)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
