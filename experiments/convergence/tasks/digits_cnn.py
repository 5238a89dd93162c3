"""Image classification: scikit-learn's 8x8 digits (ships with the package), a small CNN."""

from __future__ import annotations

from functools import cache

import numpy as np
from torch import nn

from ..train_loop import Classification, SupervisedData
from ._split import split


@cache
def _data() -> SupervisedData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return split(x, digits.target.astype(np.int64))


class DigitsCNN(Classification):
    name = "digits_cnn"
    category = "Image classification (paper: CIFAR-10/100, VGG & ResNet)"
    metric_name = "test accuracy (%)"
    higher_is_better = True
    steps_full = 500
    steps_quick = 60
    batch_size = 32

    def data(self) -> SupervisedData:
        return _data()

    def model(self) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )


TASK = DigitsCNN()
