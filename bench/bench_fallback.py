"""First benchmark: one TM-SGD step (pure-PyTorch backend, and the auto backend) against
torch.optim.SGD(foreach=True), on flat fp32 buffers. Prints a table, writes JSON.

    python bench/bench_fallback.py [--sizes 1048576 16777216] [--out bench/results/fallback.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from timing import machine, median_seconds

import tmsgd_kernels
from tmsgd_kernels import TMSGD

BYTES_PER_ELEMENT = {"tmsgd": 24, "sgd": 12}  # fp32, no momentum: read W g d1 d2, write W d_new


def _optimizer_step(make_optimizer, numel: int):
    param = torch.nn.Parameter(torch.randn(numel))
    param.grad = torch.randn(numel) * 1e-3
    optimizer = make_optimizer([param])
    return optimizer.step


def run(sizes: list[int], repeats: int) -> list[dict]:
    peers = {
        "tmsgd[torch]": (lambda p: TMSGD(p, lr=1e-3, backend="torch"), "tmsgd"),
        "tmsgd[auto]": (lambda p: TMSGD(p, lr=1e-3, backend="auto"), "tmsgd"),
        "sgd[foreach]": (lambda p: torch.optim.SGD(p, lr=1e-3, foreach=True), "sgd"),
    }
    rows = []
    for numel in sizes:
        for name, (factory, kind) in peers.items():
            seconds = median_seconds(_optimizer_step(factory, numel), repeats=repeats)
            rows.append({"peer": name, "numel": numel, "median_ms": seconds * 1e3,
                         "gb_per_s": BYTES_PER_ELEMENT[kind] * numel / seconds / 1e9})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1 << 20, 1 << 22, 1 << 24])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fallback.json"))
    args = parser.parse_args()
    auto = tmsgd_kernels.backends.resolve("auto", torch.device("cpu")).name
    rows = run(args.sizes, args.repeats)
    print(f"TM-SGD step vs torch.optim.SGD(foreach=True), fp32, no momentum "
          f"(auto = {auto}, {torch.get_num_threads()} threads)")
    print(f"{'elements':>10} {'peer':>14} {'median ms':>10} {'GB/s':>7} {'x sgd':>7}")
    for numel in args.sizes:
        sgd = next(r for r in rows if r["numel"] == numel and r["peer"] == "sgd[foreach]")
        for row in (r for r in rows if r["numel"] == numel):
            print(f"{numel:>10} {row['peer']:>14} {row['median_ms']:>10.2f} "
                  f"{row['gb_per_s']:>7.1f} {row['median_ms'] / sgd['median_ms']:>7.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "auto_backend": auto, "rows": rows},
                                   indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
