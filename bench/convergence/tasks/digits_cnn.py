"""Image classification: scikit-learn's 8x8 digits (ships with the package), a small CNN."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import torch
from torch import nn

from ..spec import RunSpec
from ..train_loop import SupervisedData, train_supervised
from ._split import split


@cache
def _data() -> SupervisedData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return split(x, digits.target.astype(np.int64))


class DigitsCNN:
    name = "digits_cnn"
    category = "Image classification (paper: CIFAR-10/100, VGG & ResNet)"
    metric_name = "test accuracy (%)"
    higher_is_better = True
    steps_full = 1200
    steps_quick = 300
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

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, y)

    def metric(self, out: torch.Tensor, y: torch.Tensor) -> float:
        return 100.0 * float((out.argmax(1) == y).float().mean())

    def run(self, spec: RunSpec) -> dict[str, Any]:
        return train_supervised(self, spec)


TASK = DigitsCNN()
