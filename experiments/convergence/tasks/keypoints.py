"""Keypoint regression (MSE): five landmarks of generated 'faces' under random similarity maps.

Each 16x16 image shows a faint ellipse (the head) and five Gaussian blobs (eyes, nose, mouth
corners) of a fixed template, rotated (+-30 deg), scaled and shifted at random, plus pixel noise.
The target is the ten landmark coordinates in [-1, 1]; the metric is test MSE, as in the paper's
facial keypoint task.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from torch import nn

from ..train_loop import SupervisedData, TrainedSupervised
from ._split import split

SIZE = 16
N_IMAGES = 4000
TEMPLATE = np.array([[-0.4, -0.3], [0.4, -0.3], [0.0, 0.1], [-0.35, 0.5], [0.35, 0.5]])
BRIGHTNESS = np.array([1.0, 1.0, 0.7, 0.8, 0.8])


def render(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, 1, SIZE, SIZE) and their landmarks (n, 10), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-np.pi / 6, np.pi / 6, n)
    scale = rng.uniform(0.4, 0.65, n)
    shift = rng.uniform(-0.25, 0.25, (n, 2))
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.stack([cos, -sin, sin, cos], 1).reshape(n, 2, 2)
    points = np.einsum("nij,kj->nki", rot, TEMPLATE) * scale[:, None, None] + shift[:, None, :]
    grid = (np.arange(SIZE) + 0.5) / SIZE * 2 - 1
    gx, gy = np.meshgrid(grid, grid)  # gx varies along columns (x), gy along rows (y)
    # head: an ellipse around the template centre
    centre = shift + np.einsum("nij,j->ni", rot, np.array([0.0, 0.1])) * scale[:, None]
    dx, dy = gx[None] - centre[:, 0, None, None], gy[None] - centre[:, 1, None, None]
    head = ((dx / (0.8 * scale[:, None, None])) ** 2 + (dy / scale[:, None, None]) ** 2 < 1) * 0.3
    img = head.astype(np.float64)
    sigma = 0.09
    for k in range(len(TEMPLATE)):
        px, py = points[:, k, 0, None, None], points[:, k, 1, None, None]
        dist2 = (gx[None] - px) ** 2 + (gy[None] - py) ** 2
        img += BRIGHTNESS[k] * np.exp(-dist2 / (2 * sigma**2))
    img += rng.normal(0, 0.1, img.shape)
    return img[:, None].astype(np.float32), points.reshape(n, -1).astype(np.float32)


@cache
def _data() -> SupervisedData:
    return split(*render(N_IMAGES))


class Keypoints(TrainedSupervised):
    name = "keypoints"
    category = "Facial keypoint regression (paper: YouTube Faces, PreActResNet34)"
    metric_name = "test MSE (x100)"
    higher_is_better = False
    steps_full = 500
    steps_quick = 60
    batch_size = 32

    def data(self) -> SupervisedData:
        return _data()

    def model(self) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(out, y)

    def metric(self, out: torch.Tensor, y: torch.Tensor) -> float:
        return 100.0 * float(nn.functional.mse_loss(out, y))


TASK = Keypoints()
