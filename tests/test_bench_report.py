"""The benchmark report (bench/report.py, the README's main job) end to end on a tiny case, and
its inputs against published facts: the model cases' parameter counts and the state bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("report") / "report.json"
    subprocess.run([sys.executable, str(BENCH / "report.py"), "--cases", "flat-64K",
                    "--rounds", "2", "--min-run-time", "0.01", "--out", str(out)],
                   check=True, timeout=300, capture_output=True)
    return json.loads(out.read_text()) | {"folder": out.parent}


def test_report_times_every_peer_and_writes_its_outputs(report) -> None:
    peers = {(r["config"], r["peer"]) for r in report["rows"]}
    for config in ("plain, fp32 history", "momentum, fp32 history", "plain, bf16 history"):
        for peer in ("tmsgd[torch]", "sgd[fused]", "sgd[foreach]", "ceiling"):
            assert (config, peer) in peers
    assert {("plain, fp32 history", "compile[fallback]"),
            ("plain, fp32 history", "compile[fair]")} <= peers
    for row in report["rows"]:
        assert row["elements"] == 1 << 16
        assert len(row["round_medians_ms"]) == 2
        assert row["median_ms"] > 0 and row["iqr_ms"] >= 0
        # GB/s is the byte model over the measured time.
        assert row["gb_per_s"] == pytest.approx(
            row["bytes_per_element"] * row["elements"] / (row["median_ms"] * 1e-3) / 1e9)
    assert report["machine"]["torch"] == torch.__version__
    for name in ("report.md", "report_bandwidth.png"):
        assert (report["folder"] / name).stat().st_size > 0


def test_byte_model_counts_every_tensor_a_step_reads_and_writes(report) -> None:
    expected = {("plain, fp32 history", "tmsgd[torch]"): 24,   # W g d_even d_odd | W slot
                ("plain, bf16 history", "tmsgd[torch]"): 18,   # 3 x 4 + 3 x 2
                ("momentum, fp32 history", "tmsgd[torch]"): 32,  # + buffer read and write
                ("plain, fp32 history", "sgd[fused]"): 12,
                ("momentum, fp32 history", "sgd[fused]"): 20,
                ("plain, fp32 history", "ceiling"): 12}
    found = {(r["config"], r["peer"]): r["bytes_per_element"] for r in report["rows"]}
    assert {key: found[key] for key in expected} == expected


def test_state_bytes_are_the_tensors_each_optimizer_keeps(report) -> None:
    """Two history slots (4 or 2 bytes), a momentum buffer in the param dtype, Adam's two
    moments, SGD's buffer; the int64 counts add 8 bytes per tensor of 1M elements."""
    measured = report["state_bytes_per_element"]
    count = 8 / (1 << 20)
    assert measured["TMSGD, fp32 history"] == pytest.approx(8 + count)
    assert measured["TMSGD, bf16 history"] == pytest.approx(4 + count)
    assert measured["TMSGD + momentum, fp32 history"] == pytest.approx(12 + count)
    assert measured["TMSGD + momentum, bf16 history"] == pytest.approx(8 + count)
    assert measured["SGD + momentum"] == pytest.approx(4)
    assert measured["Adam"] == pytest.approx(8 + 4 / (1 << 20))  # Adam's step is fp32


def test_model_cases_have_the_published_parameter_counts() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from cases import MODEL_CASES
    finally:
        sys.path.remove(str(BENCH))
    # torchvision resnet50: 25,557,032; GPT-2 small (tied head): 124,439,808;
    # TinyLlama-1.1B: 1,100,048,384.
    assert (len(MODEL_CASES["resnet50"].shapes), MODEL_CASES["resnet50"].elements) == \
        (161, 25_557_032)
    assert MODEL_CASES["gpt2-small"].elements == 124_439_808
    assert MODEL_CASES["decoder-1b"].elements == 1_100_048_384
    # 4 layers, each a router (8 x 512) and 8 experts of 2 x (2048 x 512), 2 of them stepped.
    moe = MODEL_CASES["moe-8x"]
    assert moe.elements == 4 * (8 * 512 + 8 * 2 * 2048 * 512)
    assert moe.stepped_elements == 4 * (8 * 512 + 2 * 2 * 2048 * 512)
