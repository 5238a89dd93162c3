"""Sequence classification with an LSTM on generated token sequences (stand-in for R8 text).

Eight classes ("topics"). Each class owns four keyword tokens out of a vocabulary of 48; a
sequence of 24 tokens draws each token from its class's keywords with probability 0.2 and from
the whole vocabulary otherwise, so a few noisy keywords decide the class, as in topic-labelled
text. The model reads the sequence with an LSTM and classifies from the last hidden state.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from torch import nn

from ..train_loop import Classification, SupervisedData
from ._split import split

N_CLASSES, VOCAB, LENGTH, KEYWORDS, P_KEYWORD = 8, 64, 24, 4, 0.2
N_SEQUENCES = 8000


def generate(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` token sequences (n, LENGTH) and labels (n,), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    keywords = rng.permutation(VOCAB)[: N_CLASSES * KEYWORDS].reshape(N_CLASSES, KEYWORDS)
    labels = rng.integers(0, N_CLASSES, n)
    tokens = rng.integers(0, VOCAB, (n, LENGTH))
    use_kw = rng.random((n, LENGTH)) < P_KEYWORD
    kw = keywords[labels[:, None], rng.integers(0, KEYWORDS, (n, LENGTH))]
    tokens = np.where(use_kw, kw, tokens)
    return tokens.astype(np.int64), labels.astype(np.int64)


@cache
def _data() -> SupervisedData:
    return split(*generate(N_SEQUENCES))


class LSTMClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.head = nn.Linear(32, N_CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.embed(tokens))
        return self.head(h[-1])


class LSTMSeq(Classification):
    name = "lstm_seq"
    category = "Text classification (paper: R8, LSTM)"
    metric_name = "test accuracy (%)"
    higher_is_better = True
    steps_full = 800
    steps_quick = 80
    batch_size = 32

    def data(self) -> SupervisedData:
        return _data()

    def model(self) -> nn.Module:
        return LSTMClassifier()


TASK = LSTMSeq()
