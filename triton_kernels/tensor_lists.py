"""The op's six lists of tensors, kept together so that a subset or a replaced list moves all of
them at once."""

from __future__ import annotations

from typing import NamedTuple

import torch


class TensorLists(NamedTuple):
    params: list[torch.Tensor]
    grads: list[torch.Tensor]
    delta_even: list[torch.Tensor]
    delta_odd: list[torch.Tensor]
    momentum_buffers: list[torch.Tensor]  # empty without momentum
    steps: list[torch.Tensor]

    def subset(self, indices: list[int]) -> TensorLists:
        return TensorLists(*([tensors[i] for i in indices] if tensors else [] for tensors in self))

    def streams(self) -> tuple[list[torch.Tensor], ...]:
        """The lists the update reads and writes element by element (not the counts)."""
        return self[:5] if self.momentum_buffers else self[:4]
