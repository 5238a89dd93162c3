"""Host time per optimizer step on many tiny tensors, where the step's Python and dispatch work
dominates: TMSGD's `cpu` backend against torch.optim.SGD(fused=True) and its `torch` backend
against SGD(foreach=True), with and without momentum, measured in one run.

    python bench/host_time.py [--tensors 161] [--numel 16] [--out bench/results/host_time.json]

Each case is timed with torch.utils.benchmark (blocked_autorange); peers are measured in turn,
several rounds interleaved, and the ratio is reported per round so the machine's drift between
peers is visible: median of the round ratios, with their min and max.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine  # noqa: E402

from tmsgd_kernels import TMSGD  # noqa: E402
from tmsgd_kernels.implementations import unavailable_reason  # noqa: E402

# (TMSGD backend, its peer): the peer a user of that backend would otherwise run.
PAIRS = {"cpu": dict(fused=True), "torch": dict(foreach=True)}


def make_params(count: int, numel: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(numel, generator=generator)) for _ in range(count)]
    for p in params:
        p.grad = torch.randn(numel, generator=generator) * 1e-3
    return params


def median_us(optimizer: torch.optim.Optimizer, min_run_time: float) -> tuple[float, float]:
    optimizer.step()  # state and plans built before timing
    timer = benchmark.Timer(stmt="optimizer.step()", globals={"optimizer": optimizer})
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return measurement.median * 1e6, measurement.iqr * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=161)
    parser.add_argument("--numel", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--out", default="bench/results/host_time.json")
    args = parser.parse_args()

    results = []
    for backend, peer_options in PAIRS.items():
        reason = unavailable_reason(backend, torch.device("cpu"))
        if reason is not None:
            print(f"skip {backend}: {reason}")
            continue
        for momentum in (0.0, 0.9):
            ours_params = make_params(args.tensors, args.numel)
            peer_params = make_params(args.tensors, args.numel)
            ours = TMSGD(ours_params, lr=1e-3, momentum=momentum, backend=backend)
            peer = torch.optim.SGD(peer_params, lr=1e-3, momentum=momentum, **peer_options)
            rounds = []
            for _ in range(args.rounds):
                ours_us, ours_iqr = median_us(ours, args.min_run_time)
                peer_us, peer_iqr = median_us(peer, args.min_run_time)
                rounds.append(dict(ours_us=ours_us, ours_iqr_us=ours_iqr, peer_us=peer_us,
                                   peer_iqr_us=peer_iqr, ratio=ours_us / peer_us))
            ratios = [r["ratio"] for r in rounds]
            peer_name = "SGD(" + ", ".join(f"{k}=True" for k in peer_options) + ")"
            row = dict(backend=backend, peer=peer_name, momentum=momentum,
                       tensors=args.tensors, numel=args.numel,
                       ours_us=statistics.median(r["ours_us"] for r in rounds),
                       peer_us=statistics.median(r["peer_us"] for r in rounds),
                       ratio_median=statistics.median(ratios), ratio_min=min(ratios),
                       ratio_max=max(ratios), rounds=rounds)
            results.append(row)
            print(f"tmsgd[{backend}] vs {peer_name}, momentum {momentum}: "
                  f"{row['ours_us']:.0f} us vs {row['peer_us']:.0f} us, ratio "
                  f"{row['ratio_median']:.2f} (rounds {row['ratio_min']:.2f}-"
                  f"{row['ratio_max']:.2f})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(machine=machine(), results=results), indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
