"""`make gpu-check` without a GPU: the dry run shows the one-call plan (every stage in order with
its own limit, the budget, the four output files) and runs the parts that need no GPU (the
sanitizer's driver on the CPU backends, the benchmark script on CPU tensors, the sanitizer probe's
build where nvcc is installed); a budget too small for a stage leaves it unstarted, and the
summary says so."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check_run", ROOT / "bench/gpu_check/run.py")
gpu_check = sys.modules["gpu_check_run"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)
OUTPUTS, STAGES = gpu_check.OUTPUTS, gpu_check.STAGES

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="on a GPU machine gpu-check runs for real")
GPU_STAGES = ["build", "build-check", "sanitizer-probe", "gpu-contract", "gpu-tests",
              "memcheck", "rest-of-suite", "racecheck", "initcheck", "synccheck"]


def dry_run(out: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/gpu_check/run.py", "--dry-run", "--out",
                           str(out), *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OUT": ""})


def test_dry_run_shows_the_plan_and_runs_the_cpu_parts(tmp_path):
    result = dry_run(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "budget 540 s" in result.stdout
    assert ", ".join(OUTPUTS) in result.stdout and len(OUTPUTS) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(OUTPUTS)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["budget_s"] == 540 and summary["dry_run"] and summary["planned"] == []
    stages = {s["stage"]: s for s in summary["stages"]}
    assert list(stages) == [s.name for s in STAGES]
    order = list(stages)
    # The most telling evidence first: the build, the probe, correctness, bandwidth, memcheck.
    assert order.index("sanitizer-probe") < order.index("gpu-contract") < order.index("bench") \
        < order.index("memcheck") < order.index("rest-of-suite") < order.index("racecheck")
    for name in GPU_STAGES:
        assert stages[name]["status"] == "dry run: not run", name
    assert "TORCH_CUDA_ARCH_LIST=9.0" in stages["build"]["command"]
    assert "--tool initcheck" in stages["initcheck"]["command"]
    assert stages["sanitizer-probe"]["timeout_s"] == 15
    with tarfile.open(tmp_path / "logs.tar.gz") as tar:
        logs = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}
    ran = ["sanitize-driver-cpu", "bench"]
    if stages["probe-build"]["status"] != "dry run: not run":  # nvcc is installed here
        ran.append("probe-build")
    for name in ran:
        assert stages[name]["status"] == "passed", (name, logs.get(f"logs/{name}.log"))
    driver_log = logs["logs/sanitize-driver-cpu.log"]
    assert "0 cases off the torch backend" in driver_log
    # --quick: 4 cases for each of the cpu and (interpreted) triton backends.
    assert sum(line.startswith("ok ") for line in driver_log.splitlines()) == 8
    bench = json.loads((tmp_path / "bench.json").read_text())
    cases = [row["case"] for row in bench["rows"]]
    assert cases[0].startswith("flat") and "resnet50" in cases and len(set(cases)) == 5
    peers = {row["peer"] for row in bench["rows"]}
    assert {"copy ceiling", "tmsgd[torch]", "sgd[foreach]"} <= peers
    assert all(row["median_ms"] > 0 for row in bench["rows"])
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_a_budget_too_small_for_a_stage_leaves_it_unstarted(tmp_path):
    """20 s: 10 for packing, and the first stage that runs (probe-build or the bench) cannot
    start with less than 10 left after the ones before; the call ends within the budget."""
    result = dry_run(tmp_path, "--budget", "20")
    assert result.returncode == 1, result.stdout[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    statuses = [s["status"] for s in summary["stages"]]
    assert any(s.startswith("not started") and "budget" in s for s in statuses), statuses
    assert summary["cut_by_budget"] >= 1 and summary["seconds"] < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs.tar.gz", "summary.json"]


def test_a_budget_without_room_for_a_stage_is_refused():
    result = subprocess.run([sys.executable, "bench/gpu_check/run.py", "--dry-run", "--budget",
                             "5"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "--budget must leave room" in result.stderr
