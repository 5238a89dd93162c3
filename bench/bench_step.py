"""One optimizer step on CPU: the native `cpu` backend against what users would otherwise run.

Peers, all measured in the same run and interleaved (round-robin, one step each, repeated), so
the noise of a shared machine falls on all of them alike:
    tmsgd[cpu]        TMSGD(backend="cpu"): the C++ kernel of csrc/
    tmsgd[torch]      TMSGD(backend="torch"): the pure-PyTorch fallback
    compile[torch]    torch.compile of the fallback's bucket step (inductor, fullgraph)
    sgd[foreach]      torch.optim.SGD(foreach=True), no momentum
    sgd[fused]        torch.optim.SGD(fused=True), no momentum
    add_              a.add_(b): in-place streaming, the ceiling (docs/DESIGN.md section 6)
on one flat fp32 buffer per size, and on ResNet-50's 161 parameter tensors (shapes generated
here; torchvision is not needed). Bytes per element, fp32, no momentum: TM-SGD reads W, g, d1, d2
and writes W, d_new = 24; SGD and add_ read two and write one = 12. The ceiling is the best
GB/s of sgd[fused] and add_ at that size.

    python bench/bench_step.py [--quick] [--threads N] [--repeats 15]
writes bench/results/bench_step.json and bench_step.png and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(__file__).parents[1] / ".inductor-cache"))

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from timing import machine  # noqa: E402

from tmsgd_kernels import TMSGD, native_extension  # noqa: E402

SIZES = [1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26]
QUICK_SIZES = [1 << 20, 1 << 24]
BYTES = {"tmsgd": 24, "stream": 12}
LR = 1e-3


def resnet50_shapes() -> list[tuple[int, ...]]:
    """The 161 parameter shapes of torchvision's resnet50 (53 convs, 53 batch norms, fc)."""
    shapes: list[tuple[int, ...]] = []

    def conv_bn(cin: int, cout: int, k: int) -> None:
        shapes.extend([(cout, cin, k, k), (cout,), (cout,)])

    conv_bn(3, 64, 7)
    cin = 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        for block in range(blocks):
            conv_bn(cin, width, 1)
            conv_bn(width, width, 3)
            conv_bn(width, width * 4, 1)
            if block == 0:
                conv_bn(cin, width * 4, 1)  # downsample
            cin = width * 4
    shapes.extend([(1000, 2048), (1000,)])
    return shapes


def _params(shapes, generator) -> list[torch.nn.Parameter]:
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=generator))
        p.grad = torch.randn(shape, generator=generator) * 1e-3
        params.append(p)
    return params


def peers(shapes) -> dict[str, tuple[callable, str]]:
    """name -> (step function, byte model), each with its own tensors."""
    generator = torch.Generator().manual_seed(0)
    out = {}
    if native_extension.has_kernel("CPU"):
        out["tmsgd[cpu]"] = (TMSGD(_params(shapes, generator), lr=LR, backend="cpu").step,
                             "tmsgd")
    out["tmsgd[torch]"] = (TMSGD(_params(shapes, generator), lr=LR, backend="torch").step, "tmsgd")

    compiled = TMSGD(_params(shapes, generator), lr=LR, backend="torch")
    out["compile[torch]"] = (torch.compile(compiled.step, fullgraph=True), "tmsgd")
    out["sgd[foreach]"] = (
        torch.optim.SGD(_params(shapes, generator), lr=LR, foreach=True).step, "stream")
    out["sgd[fused]"] = (
        torch.optim.SGD(_params(shapes, generator), lr=LR, fused=True).step, "stream")
    a = [torch.randn(s, generator=generator) for s in shapes]
    b = [torch.randn(s, generator=generator) for s in shapes]
    if len(shapes) == 1:
        out["add_"] = (lambda: a[0].add_(b[0]), "stream")
    else:
        out["add_"] = (lambda: torch._foreach_add_(a, b), "stream")
    return out


def measure(shapes, repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per step of every peer, interleaved round-robin."""
    steps = peers(shapes)
    for step, _ in steps.values():
        for _ in range(warmup):  # includes torch.compile's compilation
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, (step, _) in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, {
        name: kind for name, (_, kind) in steps.items()}


def rows_for(label: str, numel: int, medians: dict, kinds: dict) -> list[dict]:
    gbps = {n: BYTES[kinds[n]] * numel / s / 1e9 for n, s in medians.items()}
    ceiling = max(gbps[n] for n in ("sgd[fused]", "add_") if n in gbps)
    fallback = medians["tmsgd[torch]"]
    return [
        {"case": label, "numel": numel, "peer": n, "median_ms": s * 1e3, "gb_per_s": gbps[n],
         "fraction_of_ceiling": gbps[n] / ceiling,
         "fraction_of_fused_sgd": gbps[n] / gbps["sgd[fused]"],
         "speedup_vs_fallback": fallback / s}
        for n, s in medians.items()
    ]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flat = [r for r in rows if r["case"] == "flat"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for peer in dict.fromkeys(r["peer"] for r in flat):
        points = [(r["numel"], r["gb_per_s"]) for r in flat if r["peer"] == peer]
        ax.plot(*zip(*points), marker="o", label=peer)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("fp32 elements (one flat buffer)")
    ax.set_ylabel("GB/s moved (TM-SGD 24 B/elem, SGD and add_ 12 B/elem)")
    ax.set_title(f"CPU optimizer step, {torch.get_num_threads()} threads")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES} only")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-resnet", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results/bench_step.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)

    rows = []
    for numel in sizes:
        medians, kinds = measure([(numel,)], args.repeats)
        rows += rows_for("flat", numel, medians, kinds)
    if not args.no_resnet:
        shapes = resnet50_shapes()
        assert len(shapes) == 161
        numel = sum(torch.Size(s).numel() for s in shapes)
        medians, kinds = measure(shapes, args.repeats)
        rows += rows_for("resnet50", numel, medians, kinds)

    info = machine()
    info["cpu_kernel"] = native_extension.cpu_capability()
    print(f"CPU optimizer step, fp32, no momentum: {info['cpu']}, {info['cores']} cores, "
          f"{info['torch_threads']} threads, torch {info['torch']}, kernel {info['cpu_kernel']}; "
          f"median of {args.repeats} interleaved steps")
    print("GB/s as a fraction of the ceiling (best of sgd[fused] and add_) and of sgd[fused]; "
          "speedup = fallback time / time")
    print(f"{'case':>8} {'elements':>10} {'peer':>15} {'ms':>9} {'GB/s':>6} {'ceil':>5} "
          f"{'fused':>5} {'speedup':>7}")
    for r in rows:
        print(f"{r['case']:>8} {r['numel']:>10} {r['peer']:>15} {r['median_ms']:>9.3f} "
              f"{r['gb_per_s']:>6.1f} {r['fraction_of_ceiling']:>5.2f} "
              f"{r['fraction_of_fused_sgd']:>5.2f} {r['speedup_vs_fallback']:>7.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": info, "repeats": args.repeats,
                                    "bytes_per_element": BYTES, "rows": rows}, indent=2))
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
