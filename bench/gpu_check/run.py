"""Everything that needs a GPU, in one call that fits a device lease (`make gpu-check` calls it):
stages in the order of their evidence's value, each with its own time limit, all within one
budget (--budget, default 540 s: a 600 s call less the packing). A stage that cannot start in
what is left of the budget is not started, one that would run past it is stopped, and the
summary says so; the call itself always ends within the budget.

    build             this package, editable, for this GPU's architecture only
    build-check       the CUDA kernels registered
    probe-build       sanitizer_probe.cu, compiled with nvcc
    sanitizer-probe   compute-sanitizer works here: memcheck passes a clean kernel and reports a
                      planted out-of-bounds write (15 s)
    gpu-contract      the kernel contract on the GPU for cuda-host and cuda-device: the float64
                      oracle, bit for bit between the count modes (tests/test_kernel_contract.py)
    gpu-tests         cuda against triton bit for bit, CUDA graph capture, 64-bit indexing, the
                      grid from the occupancy (test_gpu_agreement, test_gpu_capture,
                      test_native_cuda)
    bench             flat 64M fp32 and the ResNet-50 list first, then the other cases, against
                      the copy ceiling measured in the same run (bench.py)
    memcheck          compute-sanitizer memcheck over both GPU kernels (sanitize_driver.py
                      --quick), if the probe passed
    rest-of-suite     every other test, on the GPU
    racecheck, initcheck, synccheck   the other compute-sanitizer tools, quick driver set

Everything lands in four files in --out (else $OUT, else bench/results/gpu_check; a temporary
folder for a dry run), rewritten after every stage so that a call killed from outside still
leaves its evidence:

    summary.json   the plan and every stage's status: passed, failed, timed out (its own limit),
                   cut by the budget, not started (budget, or a stage it needs did not pass)
    bench.json     the benchmark (bench.py), bench.png its plot
    logs.tar.gz    every stage's log and the JUnit XML of the test stages

--dry-run (no GPU; CI runs it, tests/test_gpu_check.py): prints the plan and runs the parts that
need none: probe-build (where nvcc is installed), the sanitizer driver on the CPU backends, and
bench.py on CPU tensors.

Runs on the machine's own Python (no venv, no network: only this package is installed).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from sanitizer_probe import cuda_tool  # noqa: E402

OUTPUTS = ("summary.json", "bench.json", "bench.png", "logs.tar.gz")
# Kept back from the budget for the last summary and tarball.
PACKING_SECONDS = 10
# A stage is not started with less than this left: it could show nothing.
SHORTEST_USEFUL = 10
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:logging", "-p", "no:cacheprovider",
          "-rfE"]
GPU_TEST_FILES = ["tests/test_gpu_agreement.py", "tests/test_gpu_capture.py",
                  "tests/test_native_cuda.py"]


@dataclass
class Context:
    out: Path
    logs: Path
    dry_run: bool
    arch: str  # compute capability, "9.0"

    @property
    def probe(self) -> Path:
        return self.logs / "sanitizer_probe"


@dataclass(frozen=True)
class Stage:
    name: str
    timeout: float  # its own limit, seconds
    command: Callable[[Context], list[str]]
    needs: tuple[str, ...] = ()  # stages that must have passed
    in_dry_run: bool = False  # runs without a GPU too (else only planned)
    only_dry_run: bool = False  # the CPU stand-in of a GPU stage
    env: Callable[[Context], dict[str, str]] = field(default=lambda context: {})


def _pytest(name: str, *arguments: str, workers: int) -> Callable[[Context], list[str]]:
    """pytest on `workers` processes (pytest-xdist, where installed), JUnit XML in the logs."""
    parallel = ["-n", str(workers)] if find_spec("xdist") is not None else []

    def command(context: Context) -> list[str]:
        return [*PYTEST, *parallel, f"--junitxml={context.logs / f'{name}.xml'}", *arguments]
    return command


def _sanitizer(tool: str) -> Callable[[Context], list[str]]:
    def command(context: Context) -> list[str]:
        return [cuda_tool("compute-sanitizer"), "--tool", tool, "--error-exitcode", "9",
                sys.executable, str(HERE / "sanitize_driver.py"), "--quick"]
    return command


BUILD_CHECK = ("from tmsgd_kernels import native_extension as n; "
               "assert n.has_kernel('CUDA'), n.load_error; print('CUDA kernels registered')")

STAGES: tuple[Stage, ...] = (
    Stage("build", 300,
          lambda c: [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                     "--no-index", "-e", "."],
          env=lambda c: {"TORCH_CUDA_ARCH_LIST": c.arch, "MAX_JOBS": str(os.cpu_count() or 2),
                         "CUDA_HOME": os.environ.get("CUDA_HOME", "/usr/local/cuda")}),
    Stage("build-check", 60, lambda c: [sys.executable, "-c", BUILD_CHECK], needs=("build",)),
    # Without a GPU it is built where nvcc is installed, to keep the probe compiling.
    Stage("probe-build", 60,
          lambda c: [sys.executable, str(HERE / "sanitizer_probe.py"), "build", str(c.probe),
                     "--arch", c.arch], in_dry_run=os.path.exists(cuda_tool("nvcc"))),
    Stage("sanitizer-probe", 15,
          lambda c: [sys.executable, str(HERE / "sanitizer_probe.py"), "run", str(c.probe)],
          needs=("probe-build",)),
    Stage("gpu-contract", 180,
          _pytest("gpu-contract", "tests/test_kernel_contract.py", "-k",
                  "cuda-host or cuda-device", workers=4), needs=("build-check",)),
    Stage("gpu-tests", 150, _pytest("gpu-tests", *GPU_TEST_FILES, workers=4),
          needs=("build-check",)),
    Stage("bench", 150,
          lambda c: [sys.executable, str(HERE / "bench.py"), "--out", str(c.out),
                     *(["--dry-run"] if c.dry_run else [])],
          needs=("build-check",), in_dry_run=True),
    Stage("memcheck", 150, _sanitizer("memcheck"), needs=("build-check", "sanitizer-probe")),
    # The driver without a sanitizer, on the CPU backends: keeps it working where no GPU is.
    Stage("sanitize-driver-cpu", 120,
          lambda c: [sys.executable, str(HERE / "sanitize_driver.py"), "--quick"],
          env=lambda c: {"TRITON_INTERPRET": "1"}, in_dry_run=True, only_dry_run=True),
    Stage("rest-of-suite", 300,
          _pytest("rest-of-suite", "tests", *(f"--ignore={f}" for f in GPU_TEST_FILES),
                  "-k", "not cuda-host and not cuda-device", workers=8),
          needs=("build-check",)),
    Stage("racecheck", 90, _sanitizer("racecheck"), needs=("build-check", "sanitizer-probe")),
    Stage("initcheck", 90, _sanitizer("initcheck"), needs=("build-check", "sanitizer-probe")),
    Stage("synccheck", 90, _sanitizer("synccheck"), needs=("build-check", "sanitizer-probe")),
)


def gpu_arch() -> str | None:
    """'major.minor' of GPU 0, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"{major}.{minor}"


def _run(command: list[str], env: dict[str, str], log: Path, limit: float) -> int | None:
    """`command` from the repository root, output to `log`; its exit code, or None when it was
    stopped at `limit` seconds (with everything it started)."""
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return None


def _details(stage: Stage, context: Context, log: Path) -> dict:
    """Counts from a test stage's JUnit XML, or a sanitizer's error summary."""
    report = context.logs / f"{stage.name}.xml"
    if report.exists():
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for suite in ET.parse(report).getroot().iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, 0))
        return {"junit": counts}
    text = log.read_text(errors="replace") if log.exists() else ""
    summaries = [line for line in text.splitlines() if "ERROR SUMMARY" in line]
    return {"sanitizer": summaries[-1].strip()} if summaries else {}


class Check:
    """The stages of one call, run in order within the budget, and what they left."""

    def __init__(self, context: Context, budget: float, stages: list[Stage],
                 start: float) -> None:
        self.context, self.budget, self.stages, self.start = context, budget, stages, start
        self.records: list[dict] = []

    def left(self) -> float:
        return self.budget - PACKING_SECONDS - (time.monotonic() - self.start)

    def run_stage(self, stage: Stage) -> dict:
        context = self.context
        command, env = stage.command(context), stage.env(context)
        shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        record = {"stage": stage.name, "command": f"{shown} {shlex.join(command)}".strip(),
                  "timeout_s": stage.timeout, "seconds": 0.0}
        print(f"[{stage.name}] {record['command']}", flush=True)
        # A dry run plans the GPU stages; what comes after them runs as if they had passed.
        done = ("passed", "dry run: not run") if context.dry_run else ("passed",)
        passed = {r["stage"] for r in self.records if r["status"] in done}
        missing = [name for name in stage.needs if name not in passed]
        if context.dry_run and not stage.in_dry_run:
            record["status"] = "dry run: not run"
        elif missing:
            record["status"] = f"not started: needs {', '.join(missing)}"
        elif self.left() < SHORTEST_USEFUL:
            record["status"] = f"not started: {max(self.left(), 0):.0f} s of the budget left"
        else:
            limit = min(stage.timeout, self.left())
            log = context.logs / f"{stage.name}.log"
            started = time.monotonic()
            code = _run(command, env, log, limit)
            record["seconds"] = round(time.monotonic() - started, 1)
            record["log"] = log.name
            if code == 0:
                record["status"] = "passed"
            elif code is not None:
                record["status"] = f"failed (exit {code})"
            elif limit < stage.timeout:
                record["status"] = f"cut by the budget after {record['seconds']:.0f} s"
            else:
                record["status"] = f"timed out after {stage.timeout:.0f} s (its limit)"
            record.update(_details(stage, context, log))
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            print("\n".join(f"    {line}" for line in tail), flush=True)
        print(f"    -> {record['status']}", flush=True)
        return record

    def run(self) -> dict:
        for stage in self.stages:
            self.records.append(self.run_stage(stage))
            self.write()
        return self.write()

    def write(self) -> dict:
        """summary.json and logs.tar.gz as they stand (replaced whole, never half written)."""
        statuses = [r["status"] for r in self.records]
        summary = {
            "dry_run": self.context.dry_run, "gpu_arch": self.context.arch,
            "budget_s": self.budget, "seconds": round(time.monotonic() - self.start, 1),
            "outputs": list(OUTPUTS),
            "passed": sum(s == "passed" for s in statuses),
            "failed": sum(s.startswith(("failed", "timed out")) for s in statuses),
            "cut_by_budget": sum("budget" in s for s in statuses),
            "stages": self.records,
            "planned": [stage.name for stage in self.stages[len(self.records):]],
        }
        _replace(self.context.out / "summary.json", json.dumps(summary, indent=1).encode())
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in sorted(self.context.logs.glob("*.log")) + sorted(
                    self.context.logs.glob("*.xml")):
                tar.add(path, arcname=f"logs/{path.name}")
        _replace(self.context.out / "logs.tar.gz", buffer.getvalue())
        return summary


def _replace(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


def plan(stages: list[Stage], context: Context, budget: float) -> None:
    print(f"gpu-check: one call, budget {budget:.0f} s ({PACKING_SECONDS} s of it for packing), "
          f"stages in order (own limit in s):")
    for stage in stages:
        where = "runs" if stage.in_dry_run else "planned"
        note = f" [dry run: {where}]" if context.dry_run else ""
        needs = f" after {', '.join(stage.needs)}" if stage.needs else ""
        print(f"  {stage.name:<20} {stage.timeout:>5.0f}{needs}{note}")
    print(f"outputs, in {context.out}: {', '.join(OUTPUTS)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=540.0,
                        help="seconds for the whole call, packing included (default 540)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    start = time.monotonic()  # the budget counts from here
    if args.budget < PACKING_SECONDS + SHORTEST_USEFUL:
        parser.error(f"--budget must leave room for a stage: at least "
                     f"{PACKING_SECONDS + SHORTEST_USEFUL} s")
    arch = gpu_arch()
    if arch is None and not args.dry_run:
        print("gpu-check: no CUDA GPU here; --dry-run shows the plan and runs the CPU parts")
        return 1
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    if out is None:  # a dry run leaves the checkout alone
        out = (Path(tempfile.mkdtemp(prefix="gpu_check-")) if args.dry_run
               else ROOT / "bench" / "results" / "gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    context = Context(out, Path(tempfile.mkdtemp(prefix="gpu_check-logs-")), args.dry_run,
                      arch or "9.0")
    stages = [s for s in STAGES if args.dry_run or not s.only_dry_run]
    plan(stages, context, args.budget)
    summary = Check(context, args.budget, stages, start).run()
    print(f"\n{'stage':<20} {'status':<40} {'s':>7}")
    for r in summary["stages"]:
        print(f"{r['stage']:<20} {r['status']:<40} {r['seconds']:>7}")
    print(f"gpu-check: {summary['passed']} passed, {summary['failed']} failed, "
          f"{summary['cut_by_budget']} cut by the budget, {summary['seconds']} s; "
          f"{', '.join(OUTPUTS)} in {out}")
    done = ("passed", "dry run: not run")
    return 0 if all(r["status"] in done for r in summary["stages"]) else 1


if __name__ == "__main__":
    sys.exit(main())
