"""Write the README's speed figures from a report's JSON (bench/report.py), between the markers
<!-- report:start --> and <!-- report:end -->, so that every number there names its machine and
its peers measured in the same run. A result with a row faster than its run's streaming ceiling
(bench/report_output.py's outside_bounds) is refused: its figures are not physical.

    python bench/readme_results.py [bench/results/report.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report_output import outside_bounds  # noqa: E402

ROOT = HERE.parent
START, END = "<!-- report:start -->", "<!-- report:end -->"
PEERS = ("/sgd[fused]", "/sgd[foreach]", "/compile[fair]")


def _ratio(row: dict, key: str) -> str:
    r = row["ratios"].get(key)
    return "" if r is None else f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"


def _floor(row: dict) -> str:
    return "" if row["time_over_floor"] is None else f"{row['time_over_floor']:.2f}"


def block(result: dict, source: str) -> str:
    m = result["machine"]
    where = m["gpu"] or f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} threads"
    lines = [START, "",
             f"From `{source}` ({result['mode']} run, {result['timer']}, {result['rounds']} "
             f"interleaved rounds): {where}, torch {m['torch']}. Time: median ms; ratios: the "
             f"TM-SGD step's time over the peer's, per round, median (range); / floor: time over "
             f"TM-SGD's bytes at the streaming ceiling's bandwidth measured in the same run.", "",
             "| case | configuration | TM-SGD | ms | / floor | / SGD fused | / SGD foreach "
             "| / compiled TM-SGD |", "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        if not row["peer"].startswith("tmsgd"):
            continue
        lines.append(f"| {row['case']} | {row['config']} | {row['peer']} | "
                     f"{row['median_ms']:.3f} | "
                     f"{_floor(row)} | "
                     + " | ".join(_ratio(row, key) for key in PEERS) + " |")
    lines += ["", "Optimizer state per fp32 parameter element, measured: "
              + "; ".join(f"{name}: {value:.0f} B"
                          for name, value in result["state_bytes_per_element"].items()) + ".",
              "", END]
    return "\n".join(lines)


def main() -> None:
    source = (Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench/results/report.json"
              ).resolve()
    result = json.loads(source.read_text())
    # Any such row, TM-SGD's or a peer's (the table's ratios are taken against the peers).
    beyond = [r for r in result["rows"] if outside_bounds(r)]
    if beyond:
        raise SystemExit(
            f"{source}: {len(beyond)} rows are faster than the streaming ceiling of their "
            "run (" + ", ".join(f"{r['case']} {r['config']} {r['peer']}: {r['of_ceiling']:.2f}"
                                for r in beyond)
            + "); the run was disturbed. Run it again on a quiet machine; README.md is unchanged")
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} ... {END} section to fill")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(head + block(result, source.relative_to(ROOT).as_posix()
                                   if source.is_relative_to(ROOT) else source.name) + tail)
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
