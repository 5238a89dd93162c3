"""The CPU kernel's step with an 8-bit history against its peers on one flat 4096 x 4096 fp32
param (issue 26): TMSGD(backend="cpu") with int8 history, the same with fp32 history,
torch.optim.SGD(fused=True) and SGD(foreach=True), each with momentum 0 and 0.9 (with momentum
also TMSGD with int8 history and an int8 buffer, momentum_dtype=torch.int8), plus the in-place
streaming add (bench/peers.py's ceiling) for the machine's bandwidth.

The peers take turns every round, each timed call by call (wall clock), so the drift of a shared
machine falls on all of them; ratios are taken round by round from each round's median call
(median, smallest, largest over rounds), and from each peer's fastest call (the least disturbed
one: on a machine shared with other jobs, a step that loses its core for a scheduler slice of
4 ms shows up as one slow call, not as a slower kernel). GB/s come from the
byte model of docs/DESIGN.md section 4 (bench/peers.py: 15.05 B/elem with an 8-bit history,
24 with fp32, SGD 12; a buffer adds 8 in fp32, 2 x (1 + 4/256) as int8 codes and scales).

    .venv/bin/python bench/int8_cpu_speed.py [--rounds 11] [--calls 5]
        [--threads 2 1] [OUT.json]

Writes bench/results/int8_cpu_speed.json unless OUT.json is given. Issue 26's targets: int8
history <= 0.70 x fp32 history and <= 1.35 x SGD(fused), both with the same momentum.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from cases import Case
from machine import machine
from measure import Timing, ratio
from peers import (
    HISTORY_BYTES,
    LR,
    MOMENTUM,
    Config,
    _ceiling,
    _sgd,
    _tensors,
    _tmsgd,
    bytes_per_element,
)

from tmsgd_kernels import TMSGD

CASE = Case("flat-4096x4096", ((4096, 4096),))
TARGETS = {"tmsgd[int8] / tmsgd[fp32]": 0.70, "tmsgd[int8] / sgd[fused]": 1.35}
INT8_BUFFER = "tmsgd[int8+int8 buffer]"


def _int8_buffer(case: Case, device: torch.device, config: Config):
    """TMSGD-M with the history and the momentum buffer as 8-bit codes."""
    optimizer = TMSGD(_tensors(case, device, config), lr=LR, backend="cpu", momentum=MOMENTUM,
                      history_dtype=torch.int8, momentum_dtype=torch.int8)
    return optimizer.step


def _bytes(name: str, config: Config) -> float:
    if name == INT8_BUFFER:  # the fp32 buffer's 8 bytes become codes and scales, read and written
        return bytes_per_element("tmsgd", Config(False, "int8")) + 2 * HISTORY_BYTES["int8"]
    return bytes_per_element("tmsgd" if name.startswith("tmsgd") else name, config)


def _builders(momentum: bool) -> dict[str, tuple]:
    """name -> (builder of the step, the Config its byte model and state use)."""
    device = torch.device("cpu")
    int8, fp32 = Config(momentum, "int8"), Config(momentum, "fp32")
    steps = {
        "tmsgd[int8]": (_tmsgd("cpu"), int8),
        "tmsgd[fp32]": (_tmsgd("cpu"), fp32),
        "sgd[fused]": (_sgd(fused=True), fp32),
        "sgd[foreach]": (_sgd(foreach=True), fp32),
        "ceiling": (_ceiling, fp32),
    }
    if momentum:
        steps[INT8_BUFFER] = (_int8_buffer, int8)
    return {name: ((lambda b=build, c=config: b(CASE, device, c)), config)
            for name, (build, config) in steps.items()}


def _time_calls(steps: dict[str, Callable[[], object]], rounds: int, calls: int
                ) -> dict[str, tuple[Timing, float]]:
    """name -> (Timing over every call, fastest call), in seconds. Each round every step runs
    `calls` calls in turn, the order rotated from round to round."""
    samples: dict[str, list[list[float]]] = {name: [] for name in steps}
    names = list(steps)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                steps[name]()
                times.append(time.perf_counter() - start)
            samples[name].append(times)
    result = {}
    for name, per_round in samples.items():
        pooled = sorted(t for times in per_round for t in times)
        quartiles = statistics.quantiles(pooled, n=4)
        result[name] = (Timing(statistics.median(pooled), quartiles[2] - quartiles[0],
                               [statistics.median(times) for times in per_round]), pooled[0])
    return result


def measure(momentum: bool, rounds: int, calls: int) -> dict:
    builders = _builders(momentum)
    steps = {}
    for name, (build, _) in builders.items():
        steps[name] = build()
        steps[name]()  # the state is created on the first step
        steps[name]()
    timed = _time_calls(steps, rounds, calls)
    del steps
    timings = {name: timing for name, (timing, _) in timed.items()}
    fastest = {name: best for name, (_, best) in timed.items()}
    elements = CASE.stepped_elements
    peers = {}
    for name, timing in timings.items():
        nbytes = _bytes(name, builders[name][1]) * elements
        peers[name] = {"median_ms": timing.median * 1e3, "iqr_ms": timing.iqr * 1e3,
                       "fastest_ms": fastest[name] * 1e3,
                       "round_ms": [t * 1e3 for t in timing.rounds],
                       "bytes_per_element": nbytes / elements,
                       "gb_per_s": nbytes / timing.median / 1e9,
                       "fastest_gb_per_s": nbytes / fastest[name] / 1e9}
    pairs = [("tmsgd[int8]", "tmsgd[fp32]"), ("tmsgd[int8]", "sgd[fused]"),
             ("tmsgd[int8]", "sgd[foreach]"), ("tmsgd[fp32]", "sgd[fused]")]
    if momentum:
        pairs += [(INT8_BUFFER, "tmsgd[fp32]"), (INT8_BUFFER, "sgd[fused]")]
    ratios = {f"{top} / {bottom}": {**ratio(timings[top], timings[bottom]),
                                    "fastest": fastest[top] / fastest[bottom]}
              for top, bottom in pairs}
    # The int8 step's time if it moved its bytes at the streaming add's bandwidth (its median
    # call's, its fastest call's).
    int8_bytes = peers["tmsgd[int8]"]["bytes_per_element"] * elements
    floor_ms = {kind: int8_bytes / (peers["ceiling"][key] * 1e9) * 1e3
                for kind, key in (("median", "gb_per_s"), ("fastest", "fastest_gb_per_s"))}
    return {"momentum": 0.9 if momentum else 0.0, "peers": peers, "ratios": ratios,
            "int8_floor_ms": floor_ms,
            "targets_met": {name: {"median": ratios[name]["median"] <= limit,
                                   "fastest": ratios[name]["fastest"] <= limit}
                            for name, limit in TARGETS.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path,
                        default=Path(__file__).parent / "results" / "int8_cpu_speed.json")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--calls", type=int, default=5, help="timed calls per peer and round")
    # One thread besides torch's default: on a shared machine a thread that loses its core
    # stalls a parallel step, and one thread shows each step's own cost per element.
    parser.add_argument("--threads", type=int, nargs="+",
                        default=sorted({torch.get_num_threads(), 1}, reverse=True))
    args = parser.parse_args()
    from tmsgd_kernels.native_extension import cpu_capability

    result = {"machine": machine(), "cpu_capability": cpu_capability(), "case": CASE.name,
              "elements": CASE.stepped_elements, "rounds": args.rounds,
              "calls_per_round": args.calls, "targets": TARGETS, "runs": [],
              # Other jobs on a shared machine: the 1-minute load average before and after.
              "load_average": [os.getloadavg()[0]]}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for momentum in (False, True):
            config = {"threads": threads, **measure(momentum, args.rounds, args.calls)}
            result["runs"].append(config)
            print(f"{threads} thread(s), momentum {config['momentum']}:")
            for name, peer in config["peers"].items():
                print(f"  {name:24s} {peer['median_ms']:8.2f} ms (iqr {peer['iqr_ms']:.2f},"
                      f" fastest {peer['fastest_ms']:.2f})  {peer['gb_per_s']:6.1f} GB/s"
                      f" (fastest {peer['fastest_gb_per_s']:.1f})")
            for name, r in config["ratios"].items():
                print(f"  {name:38s} {r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}]"
                      f"  fastest {r['fastest']:.3f}")
            floor = config["int8_floor_ms"]
            print(f"  int8 at the ceiling's bandwidth: {floor['median']:.2f} ms"
                  f" (fastest {floor['fastest']:.2f})")
    result["load_average"].append(os.getloadavg()[0])
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
