"""GPU benchmark of the Triton backend against its peers, in one run: the CUDA backend, the torch
fallback, torch.compile of the fallback, torch.optim.SGD (foreach and fused), and the ceiling (a
large device-to-device copy). The Triton backend runs with its counts on the host
(capturable=False: one launch per class of counts, counts read and advanced on the CPU) and on
the device (capturable=True: every program reads its tensor's count, a second launch advances
them). Reports GB/s moved (24 bytes per element: fp32, no momentum), the fraction of the copy
ceiling, and the host time of a step (the call alone, without waiting for the GPU), for one flat
buffer (default 64M elements) and for the parameter lists of ResNet-50 (161 tensors) and GPT-2
small (148 tensors). Writes JSON and a plot.

    python bench/bench_triton.py [--flat 67108864] [--out bench/results/triton.json]

Needs a CUDA GPU and Triton; without them it says why and exits 0. Not run yet: the machine this
was written on had no GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from timing import machine, median_seconds

from tmsgd_kernels import TMSGD
from tmsgd_kernels.backends import unavailable_reason

BYTES = {"tmsgd": 24, "sgd": 12}  # fp32, no momentum: read W g d1 d2, write W d_new (SGD: W g, W)


def resnet50_shapes() -> list[tuple[int, ...]]:
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for planes, blocks in [(64, 3), (128, 4), (256, 6), (512, 3)]:
        for block in range(blocks):
            shapes += [(planes, inplanes, 1, 1), (planes,), (planes,),
                       (planes, planes, 3, 3), (planes,), (planes,),
                       (planes * 4, planes, 1, 1), (planes * 4,), (planes * 4,)]
            if block == 0:
                shapes += [(planes * 4, inplanes, 1, 1), (planes * 4,), (planes * 4,)]
            inplanes = planes * 4
    return shapes + [(1000, 2048), (1000,)]


def gpt2_small_shapes() -> list[tuple[int, ...]]:
    d = 768
    shapes = [(50257, d), (1024, d)]
    for _ in range(12):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,),
                   (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


# Peer name -> how to build its optimizer (and whether to torch.compile its step).
PEERS = {
    "tmsgd[triton]": dict(backend="triton"),
    "tmsgd[triton,capturable]": dict(backend="triton", capturable=True),
    "tmsgd[triton]+compile": dict(backend="triton", compile=True),
    "tmsgd[cuda]": dict(backend="cuda"),
    "tmsgd[torch]": dict(backend="torch"),
    "tmsgd[torch]+compile": dict(backend="torch", compile=True),
    "sgd[foreach]": dict(sgd=dict(foreach=True)),
    "sgd[fused]": dict(sgd=dict(fused=True)),
}


def make_step(peer: str, shapes: list[tuple[int, ...]]):
    spec = dict(PEERS[peer])
    compile_step = spec.pop("compile", False)
    params = [torch.nn.Parameter(torch.randn(s, device="cuda")) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    if "sgd" in spec:
        optimizer = torch.optim.SGD(params, lr=1e-3, **spec["sgd"])
    else:
        optimizer = TMSGD(params, lr=1e-3, **spec)
    step = optimizer.step
    if compile_step:
        step = torch.compile(step, fullgraph=True)
    return step


def host_seconds(step, repeats: int) -> float:
    """Median time of the call itself: the Python, dispatch and launch work of one step."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    torch.cuda.synchronize()
    return statistics.median(times)


def copy_ceiling_gb_per_s(numel: int, repeats: int) -> float:
    src = torch.randn(numel, device="cuda")
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), repeats=repeats)
    return 2 * 4 * numel / seconds / 1e9


def peers() -> list[str]:
    cuda_backend = unavailable_reason("cuda", torch.device("cuda")) is None
    return [name for name in PEERS if name != "tmsgd[cuda]" or cuda_backend]


def run(cases: dict[str, list[tuple[int, ...]]], repeats: int) -> list[dict]:
    rows = []
    for case, shapes in cases.items():
        numel = sum(torch.Size(s).numel() for s in shapes)
        ceiling = copy_ceiling_gb_per_s(numel, repeats)
        rows.append({"case": case, "peer": "copy ceiling", "numel": numel, "tensors": len(shapes),
                     "median_ms": 8 * numel / ceiling / 1e6, "host_ms": None,
                     "gb_per_s": ceiling, "of_ceiling": 1.0})
        for peer in peers():
            step = make_step(peer, shapes)
            seconds = median_seconds(step, repeats=repeats)
            moved = BYTES["sgd" if peer.startswith("sgd") else "tmsgd"] * numel
            rows.append({"case": case, "peer": peer, "numel": numel, "tensors": len(shapes),
                         "median_ms": seconds * 1e3,
                         "host_ms": host_seconds(step, repeats) * 1e3,
                         "gb_per_s": moved / seconds / 1e9,
                         "of_ceiling": moved / seconds / 1e9 / ceiling})
            torch.cuda.empty_cache()
    return rows


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    cases = list(dict.fromkeys(r["case"] for r in rows))
    names = list(dict.fromkeys(r["peer"] for r in rows))
    figure, axis = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [next((r["of_ceiling"] for r in rows if r["case"] == c and r["peer"] == name), 0)
                  for c in cases]
        axis.bar([j + i * width for j in range(len(cases))], values, width, label=name)
    axis.set_xticks([j + 0.4 - width / 2 for j in range(len(cases))], cases)
    axis.set_ylabel("fraction of copy bandwidth")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flat", type=int, default=1 << 26, help="elements of the flat buffer")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("bench/results/triton.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_triton: no CUDA GPU here; nothing to measure (skipped)")
        return 0
    reason = unavailable_reason("triton", torch.device("cuda"))
    if reason is not None:
        print(f"bench_triton: the triton backend cannot run: {reason} (skipped)")
        return 0
    cases = {f"flat {args.flat}": [(args.flat,)], "resnet50": resnet50_shapes(),
             "gpt2-small": gpt2_small_shapes()}
    rows = run(cases, args.repeats)
    print(f"{'case':>16} {'peer':>26} {'ms':>8} {'host ms':>8} {'GB/s':>8} {'of copy':>8}")
    for row in rows:
        host = "" if row["host_ms"] is None else f"{row['host_ms']:.3f}"
        print(f"{row['case']:>16} {row['peer']:>26} {row['median_ms']:>8.3f} {host:>8} "
              f"{row['gb_per_s']:>8.1f} {row['of_ceiling']:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    plot(rows, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
