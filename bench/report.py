"""The main job: one optimizer step of every TM-SGD backend against what users would otherwise
run, on this machine, with ratios to each peer and to the bytes floor.

    python bench/report.py            quick (about a minute on a 2-core CPU): flat buffers of
                                      64K to 16M elements, ResNet-50, 161 tiny tensors, MoE
    python bench/report.py --full     every case: flat buffers 64K to 64M (1B on a GPU), ResNet-50,
                                      GPT-2 small, a 1B decoder (GPU), 161 tiny tensors, MoE

Writes report.json (every timing with its spread and the machine), report.md (the tables) and
report_*.png into bench/results/local/ (not tracked; report_full.* with --full), and prints the
tables. --update-reference writes them over the committed reference results in bench/results/
instead (the README's table is written from bench/results/report.json). Peers and byte counts:
bench/peers.py; cases: bench/cases.py; timing: bench/measure.py.

A row faster than the streaming ceiling measured in the same run (the same as below TM-SGD's byte
floor; bench/report_output.py's BEYOND_CEILING) is not physical: the ceiling or that timing was
disturbed. Such rows are flagged (`outside_bounds`) in the JSON, the tables and the output, and
bench/readme_results.py refuses to put them in the README.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(HERE.parent / ".inductor-cache"))

import torch  # noqa: E402
from cases import FLAT_SIZES, MODEL_CASES, Case, all_cases, flat  # noqa: E402
from machine import machine  # noqa: E402
from measure import ratio, time_peers  # noqa: E402
from peers import COMPILED_PEERS, Config, bytes_per_element, peers_for  # noqa: E402
from report_output import outside_bounds, write_outputs  # noqa: E402
from state_memory import state_bytes_per_element  # noqa: E402

from tmsgd_kernels import native_extension  # noqa: E402

PLAIN, MOMENTUM, BF16 = Config(), Config(momentum=True), Config(history="bf16")
INT8 = Config(history="int8")
NOISY = 0.25
RESULTS = HERE / "results"
REFERENCES = ("sgd[fused]", "sgd[foreach]", "compile[fair]", "compile[fallback]")


def plan(full: bool, on_gpu: bool) -> list[tuple[Case, Config, tuple[str, ...]]]:
    """(case, configuration, compiled peers) for every measurement of the run. A quick run
    compiles only the fair peer, once (a cold compile is 10-20 s of its minute here)."""
    if not full:
        largest = 1 << 26 if on_gpu else 1 << 24
        size = flat(largest)
        # Smaller buffers, plain only, for the bandwidth-against-size plot (a few seconds each).
        smaller = [(flat(n), PLAIN, ()) for n in FLAT_SIZES if n < largest]
        models = ["resnet50", "tiny-161", "moe-8x"] + (["gpt2-small"] if on_gpu else [])
        return (smaller + [(size, PLAIN, ("compile[fair]",)), (size, MOMENTUM, ()),
                           (size, BF16, ()), (size, INT8, ()),
                           (MODEL_CASES["resnet50"], MOMENTUM, ())]
                + [(MODEL_CASES[name], PLAIN, ()) for name in models])
    sizes = FLAT_SIZES if on_gpu else [n for n in FLAT_SIZES if n <= 1 << 26]
    runs = [(flat(n), config, COMPILED_PEERS if config == PLAIN else ())
            for n in sizes for config in (PLAIN, MOMENTUM, BF16, INT8)]
    for name, case in MODEL_CASES.items():
        if case.gpu_only and not on_gpu:
            continue
        compiled = () if name == "tiny-161" else COMPILED_PEERS
        runs += [(case, PLAIN, compiled), (case, MOMENTUM, compiled)]
    return runs


def fits_at_once(case: Case, peers: int, device: torch.device) -> bool:
    """Whether every peer's tensors (param, grad, two history slots, a buffer: at most 5 fp32
    tensors per element) fit in half the memory free now; else the peers are timed in turn."""
    need = case.elements * 4 * 5 * peers
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return need < free / 2


def rows_for(case: Case, config: Config, timings: dict) -> list[dict]:
    elements = case.stepped_elements
    ceiling = timings.get("ceiling")
    ceiling_gbps = (bytes_per_element("ceiling", config) * elements / ceiling.median / 1e9
                    if ceiling else None)
    floor_s = (bytes_per_element("tmsgd", config) * elements / (ceiling_gbps * 1e9)
               if ceiling_gbps else None)
    rows = []
    for peer, timing in timings.items():
        gbps = bytes_per_element(peer, config) * elements / timing.median / 1e9
        row = {"case": case.name, "tensors": len(case.shapes), "elements": elements,
               "config": config.label, "peer": peer, "median_ms": timing.median * 1e3,
               "iqr_ms": timing.iqr * 1e3, "round_medians_ms": [t * 1e3 for t in timing.rounds],
               # A busy machine shows as spread: flagged when the IQR exceeds a quarter of the
               # median (on a quiet 2-core machine the step's IQR is a few percent).
               "noisy": timing.iqr > NOISY * timing.median,
               "bytes_per_element": bytes_per_element(peer, config), "gb_per_s": gbps,
               "of_ceiling": gbps / ceiling_gbps if ceiling_gbps else None,
               "time_over_floor": (timing.median / floor_s
                                   if floor_s and peer.startswith(("tmsgd", "compile")) else None),
               "ratios": {f"/{ref}": ratio(timing, timings[ref]) for ref in REFERENCES
                          if ref in timings and ref != peer}}
        rows.append(row | {"outside_bounds": outside_bounds(row)})
    return rows


def output_path(full: bool, update_reference: bool) -> Path:
    """Where a run writes by default: a local folder that git ignores, so a run leaves the
    committed reference results alone unless it is asked to replace them."""
    name = "report_full.json" if full else "report.json"
    return RESULTS / name if update_reference else RESULTS / "local" / name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="every case and configuration")
    parser.add_argument("--cases", nargs="+", default=None, metavar="CASE",
                        help="only these cases (names as in bench/cases.py, e.g. flat-1M "
                             "resnet50), in every configuration; compiled peers without momentum")
    parser.add_argument("--rounds", type=int, default=None, help="default 3 quick, 5 full")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="seconds per peer per round (default 0.1 quick, 0.3 full)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=None,
                       help="the JSON file to write (default bench/results/local/report.json, "
                            "or report_full.json with --full)")
    where.add_argument("--update-reference", action="store_true",
                       help="write over the committed reference results in bench/results/")
    args = parser.parse_args()
    out = args.out or output_path(args.full, args.update_reference)
    rounds = args.rounds or (5 if args.full else 3)
    min_run_time = args.min_run_time or (0.3 if args.full else 0.1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs = plan(args.full, device.type == "cuda")
    if args.cases:
        known = {case.name: case for case in all_cases(device.type == "cuda")}
        unknown = set(args.cases) - known.keys()
        if unknown:
            parser.error(f"unknown cases {sorted(unknown)}; choose from {sorted(known)}")
        runs = [(known[name], config, COMPILED_PEERS if config == PLAIN else ())
                for name in args.cases for config in (PLAIN, MOMENTUM, BF16, INT8)]

    started = time.perf_counter()
    rows = []
    for number, (case, config, compiled) in enumerate(runs, 1):
        # Each compiled peer recompiles the same code for every case; dynamo's recompile limit
        # (8) would end a full run, so every measurement starts from an empty compile cache.
        torch._dynamo.reset()
        builders = {name: partial(build, case, device, config)
                    for name, build in peers_for(case, device, compiled).items()}
        interleave = fits_at_once(case, len(builders), device)
        timings = time_peers(builders, device, rounds, min_run_time, interleave)
        rows += [row | {"interleaved": interleave} for row in rows_for(case, config, timings)]
        print(f"[{number}/{len(runs)}] {case.name}, {config.label}: {len(timings)} peers, "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    info = machine()
    info["cpu_kernel"] = native_extension.cpu_capability()
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    result = {"machine": info, "mode": "full" if args.full else "quick", "rounds": rounds,
              "min_run_time_s": min_run_time, "timer": ("triton.testing.do_bench"
                                                        if device.type == "cuda"
                                                        else "torch.utils.benchmark"),
              "rows": rows, "state_bytes_per_element": state_bytes_per_element(),
              "seconds": round(time.perf_counter() - started, 1)}
    write_outputs(result, out)


if __name__ == "__main__":
    main()
