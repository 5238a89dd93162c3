"""The CPU kernel's step with an 8-bit history against its peers on one flat 4096 x 4096 fp32
param (issue 26): TMSGD(backend="cpu") with int8 history, the same with fp32 history,
torch.optim.SGD(fused=True) and SGD(foreach=True), each with momentum 0 and 0.9, plus the
in-place streaming add (bench/peers.py's ceiling) for the machine's bandwidth.

The peers take turns every round (bench/measure.py), so the drift of a shared machine falls on
all of them; ratios are taken round by round (median, smallest, largest). GB/s come from the
byte model of docs/DESIGN.md section 4 (bench/peers.py: 15.05 B/elem with an 8-bit history,
24 with fp32, SGD 12; momentum adds 8 to each).

    .venv/bin/python bench/int8_cpu_speed.py [--rounds 11] [--min-run-time 0.3] [OUT.json]

Writes bench/results/int8_cpu_speed.json unless OUT.json is given. Issue 26's targets: int8
history <= 0.70 x fp32 history and <= 1.35 x SGD(fused), both with the same momentum.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from cases import Case
from machine import machine
from measure import ratio, time_peers
from peers import Config, _ceiling, _sgd, _tmsgd, bytes_per_element

CASE = Case("flat-4096x4096", ((4096, 4096),))
TARGETS = {"tmsgd[int8] / tmsgd[fp32]": 0.70, "tmsgd[int8] / sgd[fused]": 1.35}


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
    return {name: ((lambda b=build, c=config: b(CASE, device, c)), config)
            for name, (build, config) in steps.items()}


def measure(momentum: bool, rounds: int, min_run_time: float) -> dict:
    builders = _builders(momentum)
    timings = time_peers({name: build for name, (build, _) in builders.items()},
                         torch.device("cpu"), rounds, min_run_time)
    elements = CASE.stepped_elements
    peers = {}
    for name, timing in timings.items():
        peer = "tmsgd" if name.startswith("tmsgd") else name
        nbytes = bytes_per_element(peer, builders[name][1]) * elements
        peers[name] = {"median_ms": timing.median * 1e3, "iqr_ms": timing.iqr * 1e3,
                       "round_ms": [t * 1e3 for t in timing.rounds],
                       "bytes_per_element": nbytes / elements,
                       "gb_per_s": nbytes / timing.median / 1e9}
    ratios = {
        "tmsgd[int8] / tmsgd[fp32]": ratio(timings["tmsgd[int8]"], timings["tmsgd[fp32]"]),
        "tmsgd[int8] / sgd[fused]": ratio(timings["tmsgd[int8]"], timings["sgd[fused]"]),
        "tmsgd[int8] / sgd[foreach]": ratio(timings["tmsgd[int8]"], timings["sgd[foreach]"]),
        "tmsgd[fp32] / sgd[fused]": ratio(timings["tmsgd[fp32]"], timings["sgd[fused]"]),
    }
    # The int8 step's time if it moved its bytes at the streaming add's bandwidth.
    floor_ms = peers["tmsgd[int8]"]["bytes_per_element"] * elements / (
        peers["ceiling"]["gb_per_s"] * 1e9) * 1e3
    return {"momentum": 0.9 if momentum else 0.0, "peers": peers, "ratios": ratios,
            "int8_floor_ms": floor_ms,
            "targets_met": {name: ratios[name]["median"] <= limit
                            for name, limit in TARGETS.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path,
                        default=Path(__file__).parent / "results" / "int8_cpu_speed.json")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--min-run-time", type=float, default=0.3)
    args = parser.parse_args()
    from tmsgd_kernels.native_extension import cpu_capability

    result = {"machine": machine(), "cpu_capability": cpu_capability(), "case": CASE.name,
              "elements": CASE.stepped_elements, "rounds": args.rounds,
              "min_run_time_s": args.min_run_time, "targets": TARGETS, "configs": []}
    for momentum in (False, True):
        config = measure(momentum, args.rounds, args.min_run_time)
        result["configs"].append(config)
        print(f"momentum {config['momentum']}:")
        for name, peer in config["peers"].items():
            print(f"  {name:14s} {peer['median_ms']:8.2f} ms (iqr {peer['iqr_ms']:.2f})"
                  f"  {peer['gb_per_s']:6.1f} GB/s")
        for name, r in config["ratios"].items():
            print(f"  {name:28s} {r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}]")
        print(f"  int8 floor at the ceiling's bandwidth: {config['int8_floor_ms']:.2f} ms")
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
