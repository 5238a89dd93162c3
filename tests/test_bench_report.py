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
    # int8 codes, and an fp32 scale per 256 elements, per slot (1024 x 1024: 4 blocks a row)
    assert measured["TMSGD, int8 history"] == pytest.approx(2 + 2 * 4 / 256 + count)
    assert measured["TMSGD + momentum, int8 history"] == pytest.approx(6 + 2 * 4 / 256 + count)
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


def _bench_module(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCH))


def _row(peer: str, of_ceiling: float | None, rounds_ms: list[float], elements: int = 1 << 20,
         bytes_per_element: int = 24) -> dict:
    median = sorted(rounds_ms)[len(rounds_ms) // 2]
    return {"case": "flat-1M", "tensors": 1, "elements": elements, "config": "plain, fp32 history",
            "peer": peer, "median_ms": median, "iqr_ms": 0.1, "round_medians_ms": rounds_ms,
            "noisy": False, "bytes_per_element": bytes_per_element,
            "gb_per_s": bytes_per_element * elements / median / 1e6, "of_ceiling": of_ceiling,
            "time_over_floor": None if of_ceiling is None else 1 / of_ceiling, "ratios": {}}


def _result(rows: list[dict]) -> dict:
    report_output = _bench_module("report_output")
    return {"machine": {"cpu": "test cpu", "cores": 2, "torch_threads": 2, "gpu": None,
                        "torch": "2.13.0", "triton": None},
            "mode": "quick", "rounds": 3, "timer": "torch.utils.benchmark",
            "rows": [r | {"outside_bounds": report_output.outside_bounds(r)} for r in rows],
            "state_bytes_per_element": {"SGD + momentum": 4.0}}


def test_rows_faster_than_the_ceiling_are_flagged(report) -> None:
    report_output = _bench_module("report_output")
    # The busy-machine figures: 20.16 of the ceiling (floor ratio 0.05).
    rows = [_row("tmsgd[cpu]", 20.16, [1.0, 1.1, 1.2]), _row("tmsgd[torch]", 1.05, [2.0] * 3),
            _row("ceiling", 1.0, [1.0] * 3, bytes_per_element=12)]
    result = _result(rows)
    assert [r["outside_bounds"] for r in result["rows"]] == [True, False, False]
    text = "\n".join(report_output.table_lines(result))
    assert "| 20.16 !! |" in text and "| 1.05 |" in text
    assert "!! 1 of 3 timings are faster than the streaming ceiling" in text
    # A real run records the flag on every row, by the same rule.
    for row in report["rows"]:
        assert row["outside_bounds"] == report_output.outside_bounds(row)


def test_readme_refuses_a_result_outside_the_bounds(tmp_path, monkeypatch) -> None:
    readme_results = _bench_module("readme_results")
    readme = tmp_path / "README.md"
    original = f"head\n{readme_results.START}\nold\n{readme_results.END}\ntail\n"
    readme.write_text(original)
    monkeypatch.setattr(readme_results, "ROOT", tmp_path)
    source = tmp_path / "report.json"
    monkeypatch.setattr(sys, "argv", ["readme_results.py", str(source)])
    # A TM-SGD row, or a peer's that the table's ratios are taken against.
    for peer in ("tmsgd[cpu]", "sgd[fused]"):
        rows = [_row(peer, 1.5, [1.0] * 3), _row("ceiling", 1.0, [1.0] * 3, 12)]
        source.write_text(json.dumps(_result(rows)))
        with pytest.raises(SystemExit, match="1 rows are faster than the streaming ceiling"):
            readme_results.main()
        assert readme.read_text() == original
    # Within the bounds, the block is written between the markers.
    source.write_text(json.dumps(_result([_row("tmsgd[cpu]", 0.9, [1.0] * 3)])))
    readme_results.main()
    assert "| flat-1M | plain, fp32 history | tmsgd[cpu] | 1.000 | 1.11 |" in readme.read_text()
    assert readme.read_text().startswith("head\n") and readme.read_text().endswith("tail\n")


def test_bandwidth_plot_spans_the_rounds_medians() -> None:
    report_output = _bench_module("report_output")
    # 24 B x 1M elements = 24 MB: 2 ms is 12 GB/s, 4 ms 6 GB/s, 3 ms 8 GB/s.
    rows = [_row("tmsgd[cpu]", None, [2.0, 4.0, 3.0], elements=1_000_000),
            _row("tmsgd[cpu]", None, [1.0, 1.0, 1.0], elements=250_000),
            _row("sgd[fused]", None, [9.0, 9.0, 9.0])]
    series = report_output.bandwidth_series(rows, "tmsgd[cpu]")
    assert [point[0] for point in series] == [250_000, 1_000_000]
    assert series[1] == pytest.approx((1_000_000, 8.0, 6.0, 12.0))
    assert series[0] == pytest.approx((250_000, 6.0, 6.0, 6.0))


def test_a_run_writes_locally_and_the_quick_run_spans_sizes() -> None:
    """A run's results go to a folder git ignores unless --update-reference; the quick plan
    times flat buffers of 64K to 16M elements for the bandwidth plot."""
    script = ("import json, report; print(json.dumps({"
              "'paths': [str(report.output_path(f, u)) for f in (False, True) "
              "for u in (False, True)], "
              "'flat': [c.name for c, config, _ in report.plan(False, False) "
              "if c.name.startswith('flat-') and config == report.PLAIN]}))")
    found = subprocess.run([sys.executable, "-c", script], cwd=BENCH, check=True, timeout=120,
                           capture_output=True, text=True)
    printed = json.loads(found.stdout.strip().splitlines()[-1])
    results = BENCH / "results"
    assert printed["paths"] == [str(results / "local" / "report.json"),
                                str(results / "report.json"),
                                str(results / "local" / "report_full.json"),
                                str(results / "report_full.json")]
    assert printed["flat"] == ["flat-64K", "flat-256K", "flat-1M", "flat-4M", "flat-16M"]
    ignored = subprocess.run(["git", "check-ignore", "-q", str(results / "local" / "report.json")],
                             cwd=BENCH)
    assert ignored.returncode == 0, "bench/results/local/ is not git-ignored"
