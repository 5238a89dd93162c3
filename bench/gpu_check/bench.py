"""The GPU benchmarks of bench/gpu_check/run.py (stage `bench`): one optimizer step of TMSGD on
its `cuda` and `triton` backends (counts on the host, and capturable) and on the `torch`
fallback, against torch.optim.SGD (foreach, fused) and the copy ceiling (a device-to-device copy
of the case's size, counting bytes read and written), all in one run. Timed with
triton.testing.do_bench (CUDA events, median). Cases, in this order: a flat fp32 buffer of 64M
elements, the parameter list of ResNet-50 (161 tensors), the flat buffer with momentum and with
bf16 history, and GPT-2 small's list (148); bench.json and bench.png are rewritten after each
case, so a run stopped by its time limit keeps the cases it finished.

Also records what the compiled kernels got on this GPU: registers, local memory and resident
blocks of the CUDA step kernels (the extension's cuda_kernel_resources), registers and spills of
the Triton kernels that ran (their JIT caches), to confirm the numbers measured ahead of time.

    python bench/gpu_check/bench.py --out DIR [--flat 67108864] [--dry-run]

--dry-run (no GPU): the same code path on CPU tensors of a few thousand elements with the CPU
peers, timed by the host clock; it checks the script, not the speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cases import gpt2_small_shapes, resnet50_shapes  # noqa: E402
from machine import machine  # noqa: E402

from tmsgd_kernels import TMSGD, native_extension  # noqa: E402
from tmsgd_kernels.implementations import unavailable_reason  # noqa: E402

# Bytes each step moves per element (section 4 of docs/DESIGN.md): TM-SGD reads W, g, d1, d2
# (+ buf) and writes W, d_new (+ buf); SGD reads W, g (+ buf) and writes W (+ buf).
TMSGD_BYTES = {"fp32": 24, "fp32 momentum": 32, "fp32 bf16-history": 18}
SGD_BYTES = {"fp32": 12, "fp32 momentum": 20, "fp32 bf16-history": 12}

PEERS = {
    "tmsgd[cuda]": dict(backend="cuda"),
    "tmsgd[cuda,capturable]": dict(backend="cuda", capturable=True),
    "tmsgd[triton]": dict(backend="triton"),
    "tmsgd[triton,capturable]": dict(backend="triton", capturable=True),
    "tmsgd[cpu]": dict(backend="cpu"),
    "tmsgd[torch]": dict(backend="torch"),
    "sgd[foreach]": dict(sgd=dict(foreach=True)),
    "sgd[fused]": dict(sgd=dict(fused=True)),
}


def cases(flat: int, lists: int | None) -> dict[str, tuple[list[tuple[int, ...]], str]]:
    """name -> (shapes, variant), the most telling first (a run cut short keeps those);
    `lists`: keep only that many tensors of each list (not the embeddings)."""
    resnet, gpt2 = resnet50_shapes(), gpt2_small_shapes()
    if lists:
        resnet, gpt2 = resnet[-lists:], gpt2[2:2 + lists]
    return {
        f"flat {flat}": ([(flat,)], "fp32"),
        "resnet50": (resnet, "fp32"),
        f"flat {flat} momentum": ([(flat,)], "fp32 momentum"),
        f"flat {flat} bf16 history": ([(flat,)], "fp32 bf16-history"),
        "gpt2-small": (gpt2, "fp32"),
    }


def peers(device: torch.device) -> list[str]:
    out = []
    for name, spec in PEERS.items():
        backend = spec.get("backend")
        if backend is not None and unavailable_reason(backend, device) is not None:
            continue
        if "sgd" in spec and spec["sgd"].get("fused") and device.type != "cuda":
            continue
        out.append(name)
    return out


def make_step(peer: str, shapes, variant: str, device: torch.device):
    spec = dict(PEERS[peer])
    momentum = 0.9 if variant == "fp32 momentum" else 0.0
    params = [torch.nn.Parameter(torch.randn(s, device=device)) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    if "sgd" in spec:
        optimizer = torch.optim.SGD(params, lr=1e-3, momentum=momentum, **spec["sgd"])
    else:
        history = torch.bfloat16 if variant == "fp32 bf16-history" else None
        optimizer = TMSGD(params, lr=1e-3, momentum=momentum, history_dtype=history, **spec)
    return optimizer.step


def median_ms(step, device: torch.device) -> float:
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(step, warmup=25, rep=200, return_mode="median"))
    step()  # the first step creates the state
    times = []
    for _ in range(5):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def copy_ceiling(numel: int, device: torch.device) -> float:
    """GB/s of a device-to-device copy of `numel` fp32 elements (bytes read plus written)."""
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    return 8 * numel / median_ms(lambda: dst.copy_(src), device) / 1e6


def kernel_resources() -> dict:
    """What the compiled kernels got on this GPU (see the module docstring)."""
    out = {"cuda": {}, "triton": {}}
    if native_extension.has_kernel("CUDA"):
        for param in ("float32", "bfloat16", "float16", "float64"):
            for history in ("float32", "bfloat16"):
                for momentum in (False, True):
                    registers, local, blocks = native_extension._C.cuda_kernel_resources(
                        param, history, momentum)
                    out["cuda"][f"{param}/{history} momentum={momentum}"] = {
                        "registers": registers, "local_bytes": local, "resident_blocks": blocks}
    try:
        from tmsgd_kernels.triton_kernels.step_kernel import tmsgd_step_kernel
    except ImportError:
        return out
    for caches in getattr(tmsgd_step_kernel, "device_caches", {}).values():
        for compiled in caches[0].values():
            meta = compiled.metadata
            out["triton"][f"{meta.name} warps={meta.num_warps} {compiled.hash[:8]}"] = {
                "registers": compiled.n_regs, "spills": compiled.n_spills}
    return out


def run(flat: int, lists: int | None, device: torch.device, out: Path) -> dict:
    """Every case against its peers; bench.json and bench.png in `out` rewritten after each case,
    so that a run stopped part way keeps the cases it finished."""
    rows = []
    for case, (shapes, variant) in cases(flat, lists).items():
        numel = sum(torch.Size(s).numel() for s in shapes)
        ceiling = copy_ceiling(numel, device)
        rows.append({"case": case, "peer": "copy ceiling", "numel": numel,
                     "tensors": len(shapes), "median_ms": 8 * numel / ceiling / 1e6,
                     "gb_per_s": ceiling, "of_ceiling": 1.0})
        for peer in peers(device):
            if peer == "tmsgd[cpu]" and device.type == "cuda":
                continue
            ms = median_ms(make_step(peer, shapes, variant, device), device)
            moved = (SGD_BYTES if peer.startswith("sgd") else TMSGD_BYTES)[variant] * numel
            rows.append({"case": case, "peer": peer, "numel": numel, "tensors": len(shapes),
                         "median_ms": ms, "gb_per_s": moved / ms / 1e6,
                         "of_ceiling": moved / ms / 1e6 / ceiling})
            if device.type == "cuda":
                torch.cuda.empty_cache()
        write(out, {"machine": machine(), "rows": rows, "kernels": {}})
    result = {"machine": machine(), "rows": rows,
              "kernels": kernel_resources() if device.type == "cuda" else {}}
    write(out, result)
    return result


def write(out: Path, result: dict) -> None:
    """bench.json and its plot (bench.png, where matplotlib is installed), each replaced whole."""
    partial = out / "bench.json.partial"
    partial.write_text(json.dumps(result, indent=1))
    partial.replace(out / "bench.json")
    plot(result["rows"], out / "bench.png")


def plot(rows: list[dict], path: Path) -> None:
    """Each peer's fraction of the copy ceiling, per case (nothing without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    cases_ = list(dict.fromkeys(r["case"] for r in rows))
    names = [n for n in dict.fromkeys(r["peer"] for r in rows) if n != "copy ceiling"]
    figure, axis = plt.subplots(figsize=(11, 4))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        values = [next((r["of_ceiling"] for r in rows if r["case"] == c and r["peer"] == name),
                       0) for c in cases_]
        axis.bar([j + i * width for j in range(len(cases_))], values, width, label=name)
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_xticks([j + 0.4 - width / 2 for j in range(len(cases_))], cases_, fontsize=8)
    axis.set_ylabel("fraction of the copy ceiling")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--flat", type=int, default=1 << 26, help="elements of the flat buffer")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    if args.dry_run:  # a 4096-element buffer, the last 3 tensors of each list (small ones)
        device, flat, lists = torch.device("cpu"), 4096, 3
    elif not torch.cuda.is_available():
        print("bench: no CUDA GPU here (use --dry-run to check the script)")
        return 1
    else:
        device, flat, lists = torch.device("cuda"), args.flat, None
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(flat, lists, device, args.out)
    print(f"{'case':>26} {'peer':>26} {'ms':>9} {'GB/s':>8} {'of copy':>8}")
    for row in result["rows"]:
        print(f"{row['case']:>26} {row['peer']:>26} {row['median_ms']:>9.3f} "
              f"{row['gb_per_s']:>8.1f} {row['of_ceiling']:>8.2f}")
    print(f"wrote {args.out / 'bench.json'}"
          + (" and bench.png" if (args.out / "bench.png").exists() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
