"""A small model and training loop shared by the 8-bit state tests (test_int8_history.py,
test_int8_momentum.py): a 64 x 96 weight takes 8-bit state, the biases and the 96 x 10 weight
keep full precision."""

from __future__ import annotations

import torch


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.Tanh(), torch.nn.Linear(96, 10))


def train(model, optimizer, steps, seed=0) -> None:
    """`steps` steps on random classification batches drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, 64, generator=generator)
        y = torch.randint(0, 10, (32,), generator=generator)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
