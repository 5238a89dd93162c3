"""`make gpu-check` without a GPU: the dry run prints every command of every stage and runs the
parts that need no GPU (the sanitizer's driver on the CPU backends, the benchmark script on CPU
tensors), writing its summary, logs, JSON and plot into one folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="on a GPU machine gpu-check runs for real")


def test_dry_run_covers_every_stage_and_runs_the_cpu_parts(tmp_path):
    result = subprocess.run([sys.executable, "bench/gpu_check/run.py", "--dry-run", "--out",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "OUT": ""})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    printed = ["build", "build-check", "test", "sanitize-memcheck", "sanitize-racecheck",
               "sanitize-initcheck", "sanitize-synccheck"]
    assert list(steps) == [*printed[:-4], *printed[-4:], "sanitize-driver-cpu", "bench"]
    for name in printed:
        assert steps[name]["status"] == "dry-run: not run", name
    assert "TORCH_CUDA_ARCH_LIST=" in steps["build"]["command"]
    assert "--tool initcheck" in steps["sanitize-initcheck"]["command"]
    for name in ("sanitize-driver-cpu", "bench"):
        assert steps[name]["status"] == "passed", (name, (tmp_path / f"{name}.log").read_text())
    driver_log = (tmp_path / "sanitize-driver-cpu.log").read_text()
    assert "0 cases off the torch backend" in driver_log
    # --quick: 4 cases for each of the cpu and (interpreted) triton backends.
    assert sum(line.startswith("ok ") for line in driver_log.splitlines()) == 8
    bench = json.loads((tmp_path / "bench.json").read_text())
    cases = {row["case"] for row in bench["rows"]}
    assert {"resnet50", "gpt2-small"} <= cases and len(cases) == 5
    peers = {row["peer"] for row in bench["rows"]}
    assert {"copy ceiling", "tmsgd[torch]", "sgd[foreach]"} <= peers
    assert all(row["median_ms"] > 0 for row in bench["rows"])
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_a_stage_that_does_not_exist_is_an_error():
    result = subprocess.run([sys.executable, "bench/gpu_check/run.py", "--dry-run", "--stages",
                             "build,fly"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "unknown stages ['fly']" in result.stderr
