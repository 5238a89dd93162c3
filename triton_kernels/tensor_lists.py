"""The op's lists of tensors, kept together so that a subset or a replaced list moves all of
them at once. Their names and order are the contract's (tmsgd_kernels/step_contract.py)."""

from __future__ import annotations

from collections import namedtuple

from tmsgd_kernels.step_contract import TENSOR_LISTS

# params, grads, delta_even, delta_odd, delta_even_scales, delta_odd_scales (both empty without
# an 8-bit history), momentum_buffers (empty without momentum), momentum_scales (empty unless
# the buffers are 8-bit), steps.
_Lists = namedtuple("_Lists", [name for name, _ in TENSOR_LISTS])


class TensorLists(_Lists):
    __slots__ = ()

    def subset(self, indices: list[int]) -> TensorLists:
        return TensorLists(*([tensors[i] for i in indices] if tensors else [] for tensors in self))

    def streams(self) -> tuple[list, ...]:
        """The lists the update reads and writes element by element (not the counts)."""
        streams = (self.params, self.grads, self.delta_even, self.delta_odd)
        return (*streams, self.momentum_buffers) if self.momentum_buffers else streams
