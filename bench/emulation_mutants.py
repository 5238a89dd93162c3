"""Mutation check of the host emulation (tests/cuda_emulation.py): can its tests fail? Each mutant
is one bug planted in a copy of csrc/ (the kernel, its host code or the shared update); the
emulation's tests run on a library built from that copy, first the plain build, then, for a
mutant the plain build misses or crashes on, the sanitizer build (ASan + UBSan). A mutant is
caught when a test fails, the tests crash or a sanitizer reports; the unmutated sources must pass
both builds first, or nothing is shown.

    python bench/emulation_mutants.py [--only NAME,...] [--out bench/results/emulation_mutants.json]

The tests: tests/test_cuda_emulation.py and the emulated implementations of
tests/test_kernel_contract.py, stopping at the first failure. About 25 minutes on 2 cores (each
mutant rebuilds what its change touches; 1505 s for 9 mutants on the shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import cuda_emulation  # noqa: E402
import torch  # noqa: E402

TESTS = ["tests/test_cuda_emulation.py", "tests/test_kernel_contract.py", "-k", "emulat"]
# A sanitizer's report ends the process with this code, told apart from failed tests (1).
SANITIZER_EXIT = 86


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to csrc/
    old: str
    new: str
    bug: str


MUTANTS = (
    Mutant("slot_swap", "cuda_kernel.cu",
           "s.parity == 0 ? even : odd, s.parity == 0 ? odd : even",
           "s.parity == 0 ? odd : even, s.parity == 0 ? even : odd",
           "d_new written over d1 instead of d2 (the history slots swapped)"),
    Mutant("tail_drop", "cuda_kernel.cu",
           "for (int64_t j = i; j < n; ++j) {",
           "for (int64_t j = i; j + 1 < n; ++j) {",
           "the last element of a chunk's ragged end not stepped"),
    Mutant("table_boundary", "cuda_kernel.cu",
           "if (table.chunk_end[mid] <= chunk) {",
           "if (table.chunk_end[mid] < chunk) {",
           "a tensor's last chunk given to the next tensor of the table (owner lookup)"),
    Mutant("count_table_boundary", "cuda_step.cpp",
           "if (counts.count == kMaxCounts || i + 1 == steps.size()) {",
           "if (counts.count == kMaxCounts + 1 || i + 1 == steps.size()) {",
           "a count table filled one past its 480 entries"),
    Mutant("first_momentum_rule", "tmsgd_update.h",
           "s.first = count == 0;",
           "s.first = count <= 1;",
           "the momentum buffer reset on the second step too"),
    Mutant("misaligned_load", "cuda_kernel.cu",
           "aligned<H, kVec>(d2) &&\n                      aligned<H, kVec>(d1) &&",
           "aligned<H, kVec>(d2) &&",
           "d1's alignment not checked before its 16-byte vector loads"),
    Mutant("int8_buffer_scale_ignored", "cuda_kernel.cu",
           "kCodes && !s.first ? table.momentum_scales[t][b] : 0.0f;",
           "kCodes && !s.first ? 1.0f : 0.0f;",
           "an 8-bit momentum buffer decoded without its block scale"),
    Mutant("int8_buffer_scales_swapped", "cuda_step.cpp",
           "int8_momentum ? momentum_scales[i].data_ptr<float>() : nullptr;",
           "int8_momentum ? delta_odd_scales[i].data_ptr<float>() : nullptr;",
           "an 8-bit momentum buffer's scales read and written in the odd history slot's"),
    Mutant("int8_buffer_encodes_d_new", "cuda_kernel.cu",
           "encode_block(buf_new, n, lane, buf_codes,",
           "encode_block(d_new, n, lane, buf_codes,",
           "an 8-bit momentum buffer stored as the codes of d_new instead of the new buffer"),
)


def sanitizer_environment() -> dict[str, str]:
    runtimes = [subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True,
                               text=True, check=True).stdout.strip()
                for name in ("libasan.so", "libubsan.so")]
    return {"LD_PRELOAD": " ".join(runtimes), "TMSGD_EMULATION_VARIANT": "sanitize",
            "ASAN_OPTIONS": f"detect_leaks=0:exitcode={SANITIZER_EXIT}",
            "UBSAN_OPTIONS": f"print_stacktrace=1:exitcode={SANITIZER_EXIT}"}


def run_tests(source: Path, variant: str, log: Path, stop_at_first: bool) -> dict:
    """The emulation's tests on the library built from `source`; what happened."""
    cuda_emulation.library(variant, source)  # built here, so the test time is the tests'
    report = log.with_suffix(".xml")
    # --capture=sys: what the library writes to the process's stderr (a sanitizer's report,
    # faulthandler's traceback of a crash) reaches the log even when the process dies in a test.
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:logging", "-p",
               "no:cacheprovider", "--capture=sys", f"--junitxml={report}",
               *(["-x"] if stop_at_first else []), *TESTS]
    environment = {**os.environ, "TMSGD_EMULATION_SOURCE": str(source)}
    if variant == "sanitize":
        environment.update(sanitizer_environment())
    started = time.monotonic()
    with open(log, "w") as handle:
        try:
            code = subprocess.run(command, cwd=ROOT, env=environment, stdout=handle,
                                  stderr=subprocess.STDOUT, timeout=1800).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    result = {"variant": variant, "exit_code": code,
              "seconds": round(time.monotonic() - started, 1)}
    text = log.read_text(errors="replace").replace(f"{ROOT}/", "")
    if code == SANITIZER_EXIT:
        reports = re.findall(r"(?:/|\w)\S*: runtime error: .*|ERROR: AddressSanitizer: .*", text)
        result.update(caught_by="sanitizer", report=(reports or ["?"])[0].strip()[:300])
    elif code == 1 and report.exists():
        failed = [case for case in ET.parse(report).getroot().iter("testcase")
                  if case.find("failure") is not None or case.find("error") is not None]
        result.update(caught_by="a failed test" if failed else None,
                      first_failure=f"{failed[0].get('name')}" if failed else None)
    elif code == "timeout":
        result.update(caught_by=None, problem=f"over 1800 s: see {log.name}")
    elif code < 0:  # killed by a signal: a crash fails a test run as surely
        in_tests = [line.strip() for line in text.splitlines()
                    if line.strip().startswith('File "tests/test_')]
        result.update(caught_by=f"a crash (signal {-code})",
                      report=(in_tests or ["?"])[0][-300:])
    elif code != 0:
        result.update(caught_by=None, problem=f"pytest ended with {code}: see {log.name}")
    else:
        passed = sum(1 for _ in ET.parse(report).getroot().iter("testcase"))
        result.update(caught_by=None, tests=passed)
    return result


def _commit() -> str | None:
    """The checkout's commit, marked when csrc/ or tests/ differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "csrc", "tests"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + (" with uncommitted changes in csrc/ or tests/" if changed else "")


def plant(mutant: Mutant, folder: Path) -> Path:
    """A copy of csrc/ under `folder` with the mutant's change made."""
    source = folder / "csrc"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(ROOT / "csrc", source)
    path = source / mutant.file
    text = path.read_text()
    if text.count(mutant.old) != 1:
        raise SystemExit(f"{mutant.name}: the text to change occurs {text.count(mutant.old)} "
                         f"times in csrc/{mutant.file}, not once: update the mutant")
    path.write_text(text.replace(mutant.old, mutant.new))
    return source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=None, help="comma-separated mutant names")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                        "emulation_mutants.json")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if args.only is None or m.name in args.only.split(",")]
    reason = cuda_emulation.unavailable_reason()
    if reason is not None:
        print(f"emulation_mutants: {reason}")
        return 1
    work = cuda_emulation.CACHE / "mutants"
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    baseline = {}
    for variant in cuda_emulation.VARIANTS:
        baseline[variant] = run_tests(ROOT / "csrc", variant, work / f"baseline-{variant}.log",
                                      stop_at_first=False)
        print(f"baseline {variant}: {baseline[variant]}", flush=True)
        if baseline[variant]["exit_code"] != 0:
            print("emulation_mutants: the unmutated sources fail; fix that first")
            return 1
    records = []
    for mutant in mutants:
        source = plant(mutant, work / mutant.name)
        record = {"name": mutant.name, "file": f"csrc/{mutant.file}", "bug": mutant.bug,
                  "change": [mutant.old, mutant.new], "runs": []}
        for variant in cuda_emulation.VARIANTS:
            run = run_tests(source, variant, work / f"{mutant.name}-{variant}.log",
                            stop_at_first=True)
            record["runs"].append(run)
            print(f"{mutant.name} ({variant}): {run}", flush=True)
            # A crash is caught too, but says little: the sanitizer build then says what it was.
            if run.get("caught_by") in ("a failed test", "sanitizer"):
                break
        record["caught"] = any(run.get("caught_by") for run in record["runs"])
        records.append(record)
    result = {
        "what": __doc__.split("\n\n")[0],
        "tests": " ".join(TESTS),
        "commit": _commit(),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__,
                    "compiler": cuda_emulation._compiler_version()},
        "baseline": baseline,
        "mutants": records,
        "caught": sum(r["caught"] for r in records),
        "planted": len(records),
        "seconds": round(time.monotonic() - started),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"emulation_mutants: {result['caught']} of {result['planted']} caught, "
          f"{result['seconds']} s; wrote {args.out}")
    return 0 if result["caught"] == result["planted"] else 1


if __name__ == "__main__":
    sys.exit(main())
