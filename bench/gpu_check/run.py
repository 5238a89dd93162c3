"""Everything that needs a GPU, in one command (`make gpu-check` calls it): on a GPU machine with
its own Python and torch (no network: nothing is installed but this package),

    build     the extension for this GPU's architecture against this torch (an editable
              install, so the tests import the package as CI does)
    test      the whole test suite on the GPU (pytest-xdist when installed), JUnit XML kept
    sanitize  compute-sanitizer's memcheck, racecheck, initcheck and synccheck over both GPU
              kernels, driven by sanitize_driver.py (every dtype pair, momentum, warm-up, AMP,
              unaligned views, counts on host and device, more tensors than one CUDA table)
    bench     bench.py: both kernels against their peers and the copy ceiling, with the
              registers and occupancy the compiled kernels got

Logs, JSON and plots go to one folder: --out, else $OUT, else bench/results/gpu_check (a new
temporary folder for a dry run). A summary (summary.json, and a table printed last) says what
passed.

    python bench/gpu_check/run.py [--stages build,test,sanitize,bench] [--out DIR] [--dry-run]

A device call is limited to 10 minutes, so on a fresh machine use three calls:
`--stages build,test`, `--stages build,sanitize`, `--stages build,bench`; a machine still warm
from the previous call rebuilds nothing (ninja). --budget (seconds, default 540) stops a call
before its limit: a stage that would start past it is skipped and said so.

--dry-run, on any machine: prints every command with its environment, and runs the parts that
need no GPU: the sanitizer's driver without the sanitizer (CPU, Triton interpreted, --quick) and
the benchmark script on CPU tensors (bench.py --dry-run). CI runs it (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STAGES = ("build", "test", "sanitize", "bench")
SANITIZER_TOOLS = ("memcheck", "racecheck", "initcheck", "synccheck")


def gpu_arch() -> str | None:
    """'major.minor' of GPU 0, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"{major}.{minor}"


def _cuda_home() -> str:
    from torch.utils.cpp_extension import CUDA_HOME  # $CUDA_HOME, else where nvcc is

    return CUDA_HOME or "/usr/local/cuda"


class Runner:
    def __init__(self, out: Path, dry_run: bool, budget: float) -> None:
        self.out, self.dry_run, self.budget = out, dry_run, budget
        self.start = time.monotonic()
        self.results: list[dict] = []

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def run(self, name: str, command: list[str], env: dict[str, str] | None = None,
            in_dry_run: bool = True) -> bool:
        """Run `command` (from the repository root), its output to <out>/<name>.log; under
        --dry-run only when `in_dry_run`. Records and returns whether it passed."""
        shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        line = f"{shown} {shlex.join(command)}".strip()
        print(f"[{name}] {line}", flush=True)
        record = {"step": name, "command": line, "seconds": 0.0}
        if self.dry_run and not in_dry_run:
            record["status"] = "dry-run: not run"
            self.results.append(record)
            return True
        if self.left() < 30:
            record["status"] = f"skipped: {self.left():.0f} s of the budget left"
            self.results.append(record)
            return False
        started = time.monotonic()
        log = self.out / f"{name}.log"
        with open(log, "w") as handle:
            try:
                code = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})},
                                      stdout=handle, stderr=subprocess.STDOUT,
                                      timeout=max(self.left(), 1)).returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
        record["seconds"] = round(time.monotonic() - started, 1)
        record["status"] = "passed" if code == 0 else f"failed ({code})"
        record["log"] = log.name
        self.results.append(record)
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        print("\n".join(f"    {t}" for t in tail), flush=True)
        return code == 0


def build(runner: Runner) -> bool:
    arch = gpu_arch() or ("9.0" if runner.dry_run else None)
    if arch is None:
        runner.results.append({"step": "build", "status": "failed: no CUDA GPU"})
        return False
    env = {"TORCH_CUDA_ARCH_LIST": arch, "MAX_JOBS": str(os.cpu_count() or 2),
           "CUDA_HOME": _cuda_home()}
    command = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
               "--no-index", "-e", "."]
    if not runner.run("build", command, env, in_dry_run=False):
        return False
    check = ("from tmsgd_kernels import native_extension as n; "
             "assert n.has_kernel('CUDA'), n.load_error; print('CUDA kernels registered')")
    return runner.run("build-check", [sys.executable, "-c", check], in_dry_run=False)


def test(runner: Runner) -> bool:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:logging",
               f"--junitxml={runner.out / 'tests.xml'}"]
    try:
        import xdist  # noqa: F401

        command += ["-n", "8"]
    except ImportError:
        pass
    return runner.run("test", command, in_dry_run=False)


def sanitize(runner: Runner) -> bool:
    sanitizer = shutil.which("compute-sanitizer") or os.path.join(
        _cuda_home(), "bin", "compute-sanitizer")
    driver = [sys.executable, str(HERE / "sanitize_driver.py")]
    ok = True
    for tool in SANITIZER_TOOLS:
        # Races and barriers: the kernels share no memory between threads (Triton's layout
        # conversions may), so two dtype pairs show as much as sixteen.
        quick = ["--quick"] if tool in ("racecheck", "synccheck") else []
        ok &= runner.run(f"sanitize-{tool}",
                         [sanitizer, "--tool", tool, "--error-exitcode", "9", *driver, *quick],
                         in_dry_run=False)
    if runner.dry_run:  # the driver itself, on the CPU backends
        ok &= runner.run("sanitize-driver-cpu", [*driver, "--quick"],
                         {"TRITON_INTERPRET": "1"})
    return ok


def bench(runner: Runner) -> bool:
    command = [sys.executable, str(HERE / "bench.py"), "--out", str(runner.out)]
    if runner.dry_run:
        command.append("--dry-run")
    return runner.run("bench", command)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--budget", type=float, default=540.0)
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {STAGES}")
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    if out is None:  # a dry run leaves the checkout alone
        out = (Path(tempfile.mkdtemp(prefix="gpu_check-")) if args.dry_run
               else ROOT / "bench" / "results" / "gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(out, args.dry_run, args.budget)
    if not args.dry_run and gpu_arch() is None:
        print("gpu-check: no CUDA GPU here; --dry-run checks the commands and the CPU parts")
        return 1
    steps = {"build": build, "test": test, "sanitize": sanitize, "bench": bench}
    for stage in stages:
        if not steps[stage](runner) and stage == "build":
            break  # nothing after a failed build would mean anything
    summary = {"dry_run": args.dry_run, "gpu_arch": gpu_arch(), "stages": stages,
               "seconds": round(time.monotonic() - runner.start, 1), "steps": runner.results}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\n{'step':<22} {'status':<28} {'s':>7}")
    for r in runner.results:
        print(f"{r['step']:<22} {r['status']:<28} {r.get('seconds', 0):>7}")
    print(f"gpu-check: {out}")
    passed = all(r["status"] in ("passed", "dry-run: not run") for r in runner.results)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
