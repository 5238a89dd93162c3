"""The report's outputs from its result dict: the printed table, JSON, markdown and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

# A step cannot move its bytes faster than in-place streaming does (the ceiling); the two are
# timed at different moments, so a tenth over it is allowed before a row counts as disturbed.
BEYOND_CEILING = 1.10


def outside_bounds(row: dict) -> bool:
    """Whether a row of bench/report.py claims more bandwidth than the ceiling of its run allows
    (for TM-SGD the same as a time below its byte floor)."""
    return (row["peer"] != "ceiling" and row["of_ceiling"] is not None
            and row["of_ceiling"] > BEYOND_CEILING)


def _spread(r: dict) -> str:
    return f"{r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]"


def _optional(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _bounds_note(result: dict) -> list[str]:
    """The rows whose figures are not physical (bench/report.py: faster than the ceiling)."""
    rows = [r for r in result["rows"] if r["outside_bounds"]]
    if not rows:
        return []
    names = ", ".join(f"{r['case']} {r['config']} {r['peer']} ({r['of_ceiling']:.2f} of the "
                      f"ceiling)" for r in rows)
    return [f"!! {len(rows)} of {len(result['rows'])} timings are faster than the streaming "
            f"ceiling measured in the same run (below the byte floor), which no step can be: "
            f"the ceiling or these timings were disturbed; do not use their figures: {names}.",
            ""]


def table_lines(result: dict) -> list[str]:
    """Markdown tables, one per case and configuration."""
    machine = result["machine"]
    where = machine["gpu"] or f"{machine['cpu']}, {machine['cores']} cores, " \
                              f"{machine['torch_threads']} threads"
    lines = [f"Machine: {where}; torch {machine['torch']}, triton {machine['triton']}; "
             f"{result['timer']}, {result['rounds']} interleaved rounds. Time: median (IQR). "
             f"Ratios: time / peer's time per round, median [min-max]. Floor: TM-SGD's bytes "
             f"at the ceiling's bandwidth.", ""]
    groups: dict[tuple, list[dict]] = {}
    for row in result["rows"]:
        groups.setdefault((row["case"], row["config"]), []).append(row)
    for (case, config), rows in groups.items():
        lines += [f"**{case}** ({rows[0]['tensors']} tensors, {rows[0]['elements']:,} elements "
                  f"stepped), {config}", "",
                  "| peer | ms | GB/s | of ceiling | / floor | / sgd[fused] | / sgd[foreach] "
                  "| / compile[fair] |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            ratios = r["ratios"]
            lines.append(
                f"| {r['peer']} | {r['median_ms']:.3f} ({r['iqr_ms']:.3f}){' !' * r['noisy']} "
                f"| {r['gb_per_s']:.1f} "
                f"| {_optional(r['of_ceiling'])}{' !!' * r['outside_bounds']} "
                f"| {_optional(r['time_over_floor'])} | "
                + " | ".join(_spread(ratios[k]) if k in ratios else ""
                             for k in ("/sgd[fused]", "/sgd[foreach]", "/compile[fair]")) + " |")
        lines.append("")
    noisy = sum(r["noisy"] for r in result["rows"])
    if noisy:
        lines += [f"! {noisy} of {len(result['rows'])} timings have an IQR above a quarter of "
                  f"their median: the machine was busy; treat their ratios with care.", ""]
    lines += _bounds_note(result)
    lines += ["**Optimizer state**, bytes per fp32 parameter element (measured after one step):",
              "", "| optimizer | bytes |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |"
              for name, value in result["state_bytes_per_element"].items()]
    return lines


def bandwidth_series(rows: list[dict], peer: str) -> list[tuple[int, float, float, float]]:
    """(elements, GB/s of the median, of the slowest and of the fastest round's median) of
    `peer` at each buffer size, smallest first."""
    series = []
    for r in sorted((r for r in rows if r["peer"] == peer), key=lambda r: r["elements"]):
        per_ms = r["bytes_per_element"] * r["elements"] / 1e6  # GB/s = this / ms
        series.append((r["elements"], r["gb_per_s"], per_ms / max(r["round_medians_ms"]),
                       per_ms / min(r["round_medians_ms"])))
    return series


def _plots(result: dict, stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    machine = result["machine"]
    label = machine["gpu"] or f"{machine['cpu']}, {machine['torch_threads']} threads"
    paths = []
    flat = [r for r in result["rows"]
            if r["case"].startswith("flat-") and r["config"].startswith("plain, fp32")]
    if flat:
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        for peer in dict.fromkeys(r["peer"] for r in flat):
            series = bandwidth_series(flat, peer)
            elements, median, low, high = zip(*series)
            style = dict(color="black", linestyle="--") if peer == "ceiling" else {}
            # The pooled median lies between the rounds' medians; max() only guards rounding.
            ax.errorbar(elements, median, yerr=([max(0.0, m - lo) for m, lo in zip(median, low)],
                                                [max(0.0, hi - m) for m, hi in zip(median, high)]),
                        marker="o", capsize=3, label=peer, **style)
        beyond = [r for r in flat if r["outside_bounds"]]
        if beyond:
            ax.scatter([r["elements"] for r in beyond], [r["gb_per_s"] for r in beyond],
                       marker="x", s=120, color="red", zorder=5,
                       label="faster than the ceiling: disturbed")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("fp32 elements in one buffer")
        ax.set_ylabel("GB/s moved (TM-SGD 24 B/element, SGD and ceiling 12)")
        ax.set_title(f"One optimizer step, no momentum: {label}\n(error bars: range of the "
                     f"{result['rounds']} rounds' medians)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(stem.with_name(stem.name + "_bandwidth.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    for kind, cases, title in (("models", ("resnet50", "gpt2-small", "decoder-1b", "moe-8x"),
                                "Time per step on model parameter lists"),
                               ("host", ("tiny-161",), "Host time: 161 tensors of 16 elements")):
        rows = [r for r in result["rows"] if r["case"] in cases
                and r["config"].startswith("plain, fp32")]
        if not rows:
            continue
        present = [c for c in cases if any(r["case"] == c for r in rows)]
        peers = list(dict.fromkeys(r["peer"] for r in rows))
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        width = 0.8 / len(peers)
        for number, peer in enumerate(peers):
            found = {r["case"]: r for r in rows if r["peer"] == peer}
            x = [i + number * width for i, c in enumerate(present) if c in found]
            shown = [found[c] for c in present if c in found]
            ax.bar(x, [r["median_ms"] for r in shown], width, label=peer)
            # Each round's median as a dot: the spread the ratios are taken over.
            ax.scatter([xi for xi, r in zip(x, shown) for _ in r["round_medians_ms"]],
                       [t for r in shown for t in r["round_medians_ms"]],
                       color="black", s=6, zorder=3)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(present))], present)
        ax.set_ylabel("ms per step (bars: median; dots: each round's median)")
        ax.set_title(f"{title}: {label}", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(stem.with_name(f"{stem.name}_{kind}.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_outputs(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    lines = table_lines(result)
    markdown = out.with_suffix(".md")
    markdown.write_text("\n".join(lines) + "\n")
    plots = _plots(result, out.with_suffix(""))
    print("\n".join(lines))
    print(f"\n{result['seconds']} s; wrote {out}, {markdown}, "
          + ", ".join(str(p) for p in plots))
