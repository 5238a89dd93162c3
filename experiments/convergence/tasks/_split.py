"""A fixed train/val/test split of a dataset (the same for every run and seed)."""

from __future__ import annotations

import numpy as np
import torch

from ..train_loop import SupervisedData


def split(
    x: np.ndarray, y: np.ndarray, fractions: tuple[float, float] = (0.6, 0.2), data_seed: int = 0
) -> SupervisedData:
    """Shuffle once with ``data_seed`` and cut into train, val, test (the rest)."""
    perm = np.random.default_rng(data_seed).permutation(len(x))
    n_train = int(fractions[0] * len(x))
    n_val = int(fractions[1] * len(x))
    parts = np.split(perm, [n_train, n_train + n_val])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return SupervisedData(*(t[p] for p in parts for t in (xt, yt)))
