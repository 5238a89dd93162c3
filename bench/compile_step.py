"""One TM-SGD step on the CPU, in one run: `TMSGD(backend="torch").step` eager, the same step
under torch.compile(fullgraph=True), and two hand-written per-tensor steps compiled the same way:

    peer_shift  the step as a user would first write it: d_new = b1 d1 + b2 d2 - lr g, p += d_new,
                then shift the history (d2 <- d1, d1 <- d_new). torch 2.13's Inductor compiles
                the shift wrongly (d2 receives d_new; pytorch/pytorch#198131 is the same bug), so
                its time is that of a wrong result; `matches_eager` records it.
    peer_swap   d_new written over d2 in place, and the two history lists swapped on the host after
                every call: the least memory traffic (4 reads, 2 writes per element), the parity
                kept in Python. The optimizer does the same under torch.compile: it keeps each
                param's parity on the host, so a compiled step has one graph per history slot.

Cases: one fp32 tensor of 16M elements, and ResNet-50's 161 parameter tensors (25.6M elements).
No momentum or weight decay (the peers have neither); lr is a 0-dim tensor everywhere, as a
scheduler would change it. Each compiled variant is first checked against its own eager run.

    python bench/compile_step.py [--rounds 10] [--min-run-time 0.5] [--out ...]

Timing: torch.utils.benchmark (blocked_autorange). The variants take turns for several rounds and
ratios are taken per round, so the machine's drift shows as their spread (median, min, max).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import resnet50_shapes  # noqa: E402
from machine import machine  # noqa: E402

from tmsgd_kernels import TMSGD  # noqa: E402

B1, B2 = 0.5, -0.5  # the paper's coefficients (1.5, -1, 0.5) in delta form


CASES = {"flat-16M": [(16 * 2**20,)], "resnet50": resnet50_shapes()}


def peer_shift(params, grads, d1s, d2s, lr) -> None:
    for p, g, d1, d2 in zip(params, grads, d1s, d2s):
        d_new = B1 * d1 + B2 * d2 - lr * g
        p.add_(d_new)
        d2.copy_(d1)
        d1.copy_(d_new)


def peer_swap(params, grads, d1s, d2s, lr) -> None:
    for p, g, d1, d2 in zip(params, grads, d1s, d2s):
        d2.mul_(B2).add_(d1, alpha=B1).sub_(lr * g)
        p.add_(d2)


def make_lists(shapes) -> dict[str, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)

    def randn(shape, scale=1.0):
        return torch.randn(shape, generator=generator) * scale

    return {
        "params": [randn(s) for s in shapes],
        "grads": [randn(s, 1e-3) for s in shapes],
        "d1": [randn(s, 1e-4) for s in shapes],
        "d2": [randn(s, 1e-4) for s in shapes],
        "steps": [torch.tensor(5, dtype=torch.int64) for _ in shapes],
    }


LR = torch.tensor(1e-3)


def optimizer_step(t, compiled: bool):
    """The optimizer's step over the case's tensors (state starts at zero), eager or compiled.
    Its steps alternate between the two history slots: compiled, one graph serves each."""
    params = [torch.nn.Parameter(p) for p in t["params"]]
    for param, grad in zip(params, t["grads"]):
        param.grad = grad
    optimizer = TMSGD(params, lr=LR, backend="torch")
    t["params"] = params
    return torch.compile(optimizer.step, fullgraph=True) if compiled else optimizer.step


def shift_step(t, compiled: bool):
    step = torch.compile(peer_shift, fullgraph=True) if compiled else peer_shift
    return lambda: step(t["params"], t["grads"], t["d1"], t["d2"], LR)


def swap_step(t, compiled: bool):
    step = torch.compile(peer_swap, fullgraph=True) if compiled else peer_swap

    def one_step():
        step(t["params"], t["grads"], t["d1"], t["d2"], LR)
        t["d1"], t["d2"] = t["d2"], t["d1"]
    return one_step


# name: (how to make its step from the tensors, compiled?)
VARIANTS = {
    "eager": (optimizer_step, False),
    "compiled": (optimizer_step, True),
    "peer_shift": (shift_step, True),
    "peer_swap": (swap_step, True),
}


def prepare(shapes) -> tuple[dict, dict, dict]:
    """Each variant's step on its own tensors; the time of its first call (the compile); whether
    its first compiled step matches the same step run eagerly."""
    steppers, first_call_s, matches_eager = {}, {}, {}
    for name, (make_step, compiled) in VARIANTS.items():
        lists = make_lists(shapes)
        step = make_step(lists, compiled)
        start = time.perf_counter()
        step()
        first_call_s[name] = round(time.perf_counter() - start, 2)
        step()  # the optimizer's second graph (the other history slot)
        if compiled:
            reference = make_lists(shapes)
            eager = make_step(reference, False)
            eager()
            eager()
            # Params are O(1), steps O(1e-3): compiled and eager rounding differ by a few ulps
            # of a param (~1e-6), a wrong result by the size of a step.
            matches_eager[name] = all(
                torch.allclose(a, b, rtol=0, atol=1e-5)
                for key in ("params", "d1", "d2") for a, b in zip(lists[key], reference[key]))
        steppers[name] = step
    return steppers, first_call_s, matches_eager


def ratio_spread(top: list, bottom: list) -> dict:
    ratios = [a.median / b.median for a, b in zip(top, bottom)]
    return {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3),
            "max": round(max(ratios), 3)}


def measure(case: str, shapes, rounds: int, min_run_time: float) -> dict:
    steppers, first_call_s, matches_eager = prepare(shapes)
    per_round = {name: [] for name in steppers}
    for _ in range(rounds):
        for name, step in steppers.items():
            # All of the machine's threads, as training would use (the Timer's default is one).
            timer = benchmark.Timer(stmt="step()", globals={"step": step},
                                    num_threads=torch.get_num_threads())
            per_round[name].append(timer.blocked_autorange(min_run_time=min_run_time))
    result = {"case": case, "tensors": len(shapes),
              "elements": sum(torch.Size(s).numel() for s in shapes),
              "first_call_s": first_call_s, "matches_eager": matches_eager}
    for name, measurements in per_round.items():
        merged = benchmark.Measurement.merge(measurements)[0]
        result[name] = {"median_ms": round(merged.median * 1e3, 3),
                        "iqr_ms": round(merged.iqr * 1e3, 3),
                        "round_medians_ms": [round(m.median * 1e3, 3) for m in measurements]}
    result["ratios"] = {f"compiled/{other}": ratio_spread(per_round["compiled"], per_round[other])
                        for other in ("eager", "peer_swap", "peer_shift")}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", default="bench/results/compile_step.json")
    args = parser.parse_args()

    results = []
    for case in args.cases:
        results.append(measure(case, CASES[case], args.rounds, args.min_run_time))
        print(json.dumps(results[-1], indent=1), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
