"""How far TMSGD under DDP, FSDP2 and ZeroRedundancyOptimizer (2 gloo ranks on this CPU) ends from
the same six steps in one process: the largest absolute difference over every param and state
tensor, per engine and backend. Writes bench/results/distributed_agreement.json.

    python bench/distributed_agreement.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel is defined

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's workers are the runs measured here
sys.path.insert(0, str(ROOT / "bench"))

from distributed_harness import run_on_ranks  # noqa: E402
from distributed_workers import (  # noqa: E402
    batches,
    ddp_no_sync_accumulation,
    fsdp2_train,
    single_process_run,
    zero_train_and_resume,
)
from machine import machine  # noqa: E402

from tmsgd_kernels.implementations import unavailable_reason  # noqa: E402


def largest_difference(actual: dict, expected: dict) -> float:
    return max((actual[name][key].double() - value.double()).abs().max().item()
               for name, state in expected.items() for key, value in state.items()
               if key != "step")


def main() -> None:
    backends = [b for b in ("torch", "cpu", "triton")
                if unavailable_reason(b, torch.device("cpu")) is None]
    rows = []
    for backend in backends:
        reference = single_process_run(backend, batches())
        late = single_process_run(backend, batches(), late_momentum=True)
        with tempfile.TemporaryDirectory() as folder:
            fsdp2 = run_on_ranks(fsdp2_train, Path(folder) / "fsdp2", backend)[0]["full"]
            ddp = run_on_ranks(ddp_no_sync_accumulation, Path(folder) / "ddp", backend)[0]
            zero = run_on_ranks(zero_train_and_resume, Path(folder) / "zero", backend)
        stepped = {n: s for rank in zero for n, s in rank["uninterrupted"]["state"].items()
                   if len(s) > 1}
        for engine, actual, expected in (("FSDP2", fsdp2, late), ("DDP no_sync", ddp, reference),
                                         ("ZeRO", stepped, reference)):
            rows.append({"engine": engine, "backend": backend,
                         "max_abs_difference": largest_difference(actual, expected)})
            print(f"{engine:12s} {backend:7s} {rows[-1]['max_abs_difference']:.3g}")
    result = {"machine": machine(), "steps": len(batches()), "rows": rows}
    out = ROOT / "bench" / "results" / "distributed_agreement.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
