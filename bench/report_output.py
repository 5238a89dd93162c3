"""The report's outputs from its result dict: the printed table, JSON, markdown and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path


def _spread(r: dict) -> str:
    return f"{r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]"


def _optional(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


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
                f"| {_optional(r['of_ceiling'])} | {_optional(r['time_over_floor'])} | "
                + " | ".join(_spread(ratios[k]) if k in ratios else ""
                             for k in ("/sgd[fused]", "/sgd[foreach]", "/compile[fair]")) + " |")
        lines.append("")
    noisy = sum(r["noisy"] for r in result["rows"])
    if noisy:
        lines += [f"! {noisy} of {len(result['rows'])} timings have an IQR above a quarter of "
                  f"their median: the machine was busy; treat their ratios with care.", ""]
    lines += ["**Optimizer state**, bytes per fp32 parameter element (measured after one step):",
              "", "| optimizer | bytes |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |"
              for name, value in result["state_bytes_per_element"].items()]
    return lines


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
            points = sorted((r["elements"], r["gb_per_s"]) for r in flat if r["peer"] == peer)
            style = dict(color="black", linestyle="--") if peer == "ceiling" else {}
            ax.plot(*zip(*points), marker="o", label=peer, **style)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("fp32 elements in one buffer")
        ax.set_ylabel("GB/s moved (TM-SGD 24 B/element, SGD and ceiling 12)")
        ax.set_title(f"One optimizer step, no momentum: {label}", fontsize=9)
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
            values = [next((r["median_ms"] for r in rows if r["case"] == c and r["peer"] == peer),
                           0.0) for c in present]
            ax.bar([i + number * width for i in range(len(present))], values, width, label=peer)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(present))], present)
        ax.set_ylabel("ms per step (median)")
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
