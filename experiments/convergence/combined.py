"""Holm over several runs' families joined: the sensitivity line for runs declared separately.

The budget run and the run of the task added after it started (design.BUDGET_NEW_TASKS) are
each corrected within their own families. A reader who wants one family per question across
both gets it here: the same family's comparisons from every run given, Holm over their union
(each run's padding for declared tasks it did not reach included).

    python -m experiments.convergence.combined docs/experiments/budget \
        docs/experiments/budget-insteval
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from experiments.stats import holm

from .analysis import verdict
from .optimizers import LABELS


def joined(analyses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every comparison of every analysis, with ``p_holm_joined``: Holm over the union of its
    family's comparisons in all analyses, declared but unrun ones counted with p = 1."""
    rows: list[dict[str, Any]] = []
    families = dict.fromkeys(f for a in analyses for f in a["families"])
    for family in families:
        members = [c for a in analyses for c in a["comparisons"] if c["family"] == family]
        unrun = sum(a["family_sizes"][family] - a["family_run"][family]
                    for a in analyses if family in a["families"])
        adjusted = holm([c["p_t"] for c in members] + [1.0] * unrun)[: len(members)]
        rows += [{**c, "p_holm_joined": p} for c, p in zip(members, adjusted)]
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| family | task | comparison | mean difference | p (Holm, own run) | "
             "p (Holm, runs joined) | verdict (joined) |", "|---|---|---|---|---|---|---|"]
    for c in rows:
        lines.append(f"| {c['family']} | {c['task']} | {LABELS[c['challenger']]} vs "
                     f"{LABELS[c['baseline']]} | {c.get('mean_diff', float('nan')):+.4g} | "
                     f"{c['p_holm']:.2g} | {c['p_holm_joined']:.2g} | "
                     f"{verdict(c, 'p_holm_joined')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.convergence.combined",
                                description=__doc__)
    p.add_argument("runs", nargs="+", type=Path, help="folders holding a runs.json each")
    args = p.parse_args(argv)
    analyses = [json.loads((d / "runs.json").read_text())["analysis"] for d in args.runs]
    print(markdown(joined(analyses)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
