"""What the auxiliary-variable tests share: the MLPs they build and one-thread runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def one_thread():
    """Small matrices: one thread avoids oversubscribing a shared CPU (restored afterwards).
    Autouse in every test module that imports it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def mlp(widths: list[int], act=nn.Tanh) -> nn.Sequential:
    """Linear layers between consecutive widths, ``act`` after every one but the last (fp64)."""
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        mods.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            mods.append(act())
    return nn.Sequential(*mods).double()
