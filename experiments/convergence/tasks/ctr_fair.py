"""CTR-style prediction on real data: the Fair (1978) extramarital-affairs survey.

6366 answers, eight fields that are all coded as small categorical scales (marriage rating, age
band, years married, children, religiousness, education, own and husband's occupation); the label
is whether any affair was reported (about 32 %). It ships inside the statsmodels wheel
(statsmodels/datasets/fair/fair.csv), so nothing is downloaded. Same wide-and-deep model as the
generated CTR task; metric: test AUC.
"""

from __future__ import annotations

import csv
import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..train_loop import SupervisedData, TrainedSupervised
from ._split import split
from .ctr_widedeep import WideAndDeep

FIELDS = ("rate_marriage", "age", "yrs_married", "children", "religious", "educ",
          "occupation", "occupation_husb")


def csv_path() -> Path:
    """The data file inside the installed statsmodels package (not imported: it pulls pandas)."""
    spec = importlib.util.find_spec("statsmodels")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("ctr_fair needs statsmodels (requirements-test.txt pins it)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "fair" / "fair.csv"


def load() -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """(global field-value ids (n, 8), labels (n,), cardinality of each field)."""
    with csv_path().open() as f:
        rows = list(csv.DictReader(f))
    columns, cards = [], []
    offset = 0
    for field in FIELDS:
        raw = [float(r[field]) for r in rows]
        levels = {v: i for i, v in enumerate(sorted(set(raw)))}
        columns.append(np.array([levels[v] for v in raw]) + offset)
        cards.append(len(levels))
        offset += len(levels)
    labels = np.array([float(r["affairs"]) > 0 for r in rows], dtype=np.float32)
    return np.stack(columns, 1).astype(np.int64), labels, tuple(cards)


@cache
def _data() -> tuple[SupervisedData, tuple[int, ...]]:
    ids, labels, cards = load()
    return split(ids, labels), cards


class CTRFair(TrainedSupervised):
    name = "ctr_fair"
    category = "CTR prediction on real data (Fair affairs survey, statsmodels)"
    metric_name = "test AUC (%)"
    higher_is_better = True
    steps_full = 600
    steps_quick = 80
    batch_size = 64

    def data(self) -> SupervisedData:
        return _data()[0]

    def model(self) -> nn.Module:
        return WideAndDeep(_data()[1])

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(out, y)

    def metric(self, out: torch.Tensor, y: torch.Tensor) -> float:
        from sklearn.metrics import roc_auc_score

        return 100.0 * float(roc_auc_score(y.numpy(), out.numpy()))


TASK = CTRFair()
