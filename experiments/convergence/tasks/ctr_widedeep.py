"""CTR prediction with a wide-and-deep model on generated categorical data (stand-in for Avazu).

Ten categorical fields of mixed cardinality. The true click logit is a sum of per-field effects,
three pairwise field interactions (which a linear model cannot express) and a bias giving a click
rate near 20%; labels are Bernoulli draws. Metric: test AUC.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from torch import nn

from ..train_loop import SupervisedData, TrainedSupervised
from ._split import split

CARDINALITIES = (5, 10, 20, 50, 100, 8, 12, 30, 40, 3)
INTERACTIONS = ((0, 1), (2, 5), (3, 9))
N_ROWS = 40000
OFFSETS = np.cumsum((0,) + CARDINALITIES[:-1])


def generate(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of field values (global ids, n x fields) and click labels, from ``seed``."""
    rng = np.random.default_rng(seed)
    # skewed (Zipf-like) value frequencies, as in real CTR logs
    values = np.stack(
        [rng.choice(c, n, p=(w := 1.0 / np.arange(1, c + 1)) / w.sum()) for c in CARDINALITIES], 1
    )
    logit = np.full(n, -1.6)
    for f, c in enumerate(CARDINALITIES):
        logit += rng.normal(0, 0.4, c)[values[:, f]]
    for a, b in INTERACTIONS:
        table = rng.normal(0, 0.8, (CARDINALITIES[a], CARDINALITIES[b]))
        logit += table[values[:, a], values[:, b]]
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return (values + OFFSETS).astype(np.int64), labels


@cache
def _data() -> SupervisedData:
    return split(*generate(N_ROWS))


class WideAndDeep(nn.Module):
    """Wide part: one learned weight per field value; deep part: embeddings and an MLP."""

    def __init__(self, cardinalities: tuple[int, ...] = CARDINALITIES, embed_dim: int = 8) -> None:
        super().__init__()
        total = int(sum(cardinalities))
        self.wide = nn.Embedding(total, 1)
        nn.init.zeros_(self.wide.weight)
        self.embed = nn.Embedding(total, embed_dim)
        nn.init.normal_(self.embed.weight, std=0.1)
        self.deep = nn.Sequential(
            nn.Linear(len(cardinalities) * embed_dim, 64),
            nn.ReLU(),
            nn.Linear(64, 32),
            nn.ReLU(),
            nn.Linear(32, 1),
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        wide = self.wide(ids).sum(dim=(1, 2))
        deep = self.deep(self.embed(ids).flatten(1)).squeeze(1)
        return wide + deep


class CTRWideDeep(TrainedSupervised):
    name = "ctr_widedeep"
    category = "CTR prediction (paper: Avazu, Wide&Deep)"
    metric_name = "test AUC (%)"
    higher_is_better = True
    steps_full = 800
    steps_quick = 80
    batch_size = 256

    def data(self) -> SupervisedData:
        return _data()

    def model(self) -> nn.Module:
        return WideAndDeep()

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(out, y)

    def metric(self, out: torch.Tensor, y: torch.Tensor) -> float:
        from sklearn.metrics import roc_auc_score

        return 100.0 * float(roc_auc_score(y.numpy(), out.numpy()))


TASK = CTRWideDeep()
